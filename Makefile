# Set-up and everyday commands. `make run` and `make test` create .venv and install first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install run test lint typecheck pytest bench clean messages

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/visioncraft serve

lint: $(STAMP)
	$(BIN)/ruff check app telemetry tests
	$(BIN)/ruff format --check app telemetry tests

typecheck: $(STAMP)
	$(BIN)/mypy app telemetry

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

# Re-extract the page strings into messages.pot and merge them into each language's .po file;
# then translate the new or fuzzy entries in app/web/locales/ja/LC_MESSAGES/messages.po.
LOCALES := app/web/locales
messages: $(STAMP)
	$(BIN)/pybabel extract -F app/web/babel.cfg -k N_ --no-location --sort-output \
		--project VisionCraftAI -o $(LOCALES)/messages.pot .
	$(BIN)/pybabel update -i $(LOCALES)/messages.pot -d $(LOCALES) -w 100 --ignore-pot-creation-date

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
