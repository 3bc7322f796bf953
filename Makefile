# Set-up and everyday commands. `make run` and `make test` create .venv and install first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install run test lint typecheck pytest bench clean stack-env messages

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/visioncraft serve

lint: $(STAMP)
	$(BIN)/ruff check app telemetry tests bench
	$(BIN)/ruff format --check app telemetry tests bench

typecheck: $(STAMP)
	$(BIN)/mypy app telemetry

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

# The benchmarks of bench/ (not part of `make test`): about 9 minutes on 2 cores. They send
# their load with `hey` (apt-get install hey) and need the two peers of the bench extra.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# Write .env with new random secrets for docker-compose.yml; an existing .env is kept.
stack-env:
	@if [ -e .env ]; then echo ".env exists; it is kept as it is."; else umask 077 && \
	$(PYTHON) -c 'import secrets; token = lambda: secrets.token_urlsafe(32); \
	print(f"SECRET_KEY={token()}\nMETRICS_TOKEN={token()}\nPOSTGRES_PASSWORD={token()}\nGRAFANA_ADMIN_PASSWORD={token()}\nGEMINI_API_KEY=")' > .env \
	&& chmod 600 .env && echo "Wrote .env with new secrets for docker compose."; fi

# Re-extract the page strings into messages.pot and merge them into each language's .po file;
# then translate the new or fuzzy entries in app/web/locales/ja/LC_MESSAGES/messages.po.
LOCALES := app/web/locales
messages: $(STAMP)
	$(BIN)/pybabel extract -F app/web/babel.cfg -k N_ --no-location --sort-output \
		--project VisionCraftAI -o $(LOCALES)/messages.pot .
	$(BIN)/pybabel update -i $(LOCALES)/messages.pot -d $(LOCALES) -w 100 --ignore-pot-creation-date

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
