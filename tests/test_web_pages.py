"""The public pages through the app: languages, headers, static files, SEO files and errors."""

from __future__ import annotations

import ast
import json
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.web.error_codes import ERROR_CODES
from app.web.seo import INDEXED_PATHS
from app.web.static import HASHED_CACHE_CONTROL, PLAIN_CACHE_CONTROL

HTML = {"Accept": "text/html"}
PAGES = [*INDEXED_PATHS, "/contact/sent", "/signup"]
APP_DIR = Path(__file__).resolve().parents[1] / "app"


def _page(client: TestClient, path: str, **headers: str) -> str:
    response = client.get(path, headers={**HTML, **headers})
    assert response.status_code == 200, response.text
    return response.text


def _static_url(html: str, name: str) -> str:
    stem, suffix = name.rsplit(".", 1)
    match = re.search(rf'"(/static/{re.escape(stem)}\.[0-9a-f]{{12}}\.{suffix})"', html)
    assert match, f"no hashed URL for {name}"
    return match.group(1)


@pytest.mark.parametrize("path", PAGES)
def test_page_renders_in_both_languages(client: TestClient, path: str) -> None:
    english = client.get(f"{path}?lang=en", headers=HTML)
    japanese = client.get(f"{path}?lang=ja", headers=HTML)

    assert english.status_code == japanese.status_code == 200
    assert '<html lang="en">' in english.text
    assert '<html lang="ja">' in japanese.text
    assert english.headers["content-language"] == "en"
    assert japanese.headers["content-language"] == "ja"
    english_title = re.search(r"<title>(.*?)</title>", english.text)
    japanese_title = re.search(r"<title>(.*?)</title>", japanese.text)
    assert english_title and japanese_title
    assert english_title.group(1) != japanese_title.group(1)


@pytest.mark.parametrize("path", PAGES)
def test_page_has_security_headers(client: TestClient, path: str) -> None:
    response = client.get(path, headers=HTML)
    policy = response.headers["content-security-policy"]

    assert "script-src 'self';" in policy
    assert "unsafe-inline" not in policy
    assert "unsafe-eval" not in policy
    assert "frame-ancestors 'none'" in policy
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "strict-origin-when-cross-origin"
    assert "camera=()" in response.headers["permissions-policy"]
    assert "strict-transport-security" not in response.headers


def test_page_has_no_inline_script(client: TestClient) -> None:
    for path in PAGES:
        html = _page(client, path)
        scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, flags=re.DOTALL)
        for attributes, body in scripts:
            executable = 'type="application/ld+json"' not in attributes
            assert not (executable and body.strip()), f"inline script on {path}"
        assert " on" + "click=" not in html


def test_api_response_gets_basic_headers_only(client: TestClient) -> None:
    response = client.get("/api/v1/images")

    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "strict-origin-when-cross-origin"
    assert "content-security-policy" not in response.headers


def test_hsts_is_sent_behind_trusted_https_proxy(tmp_path: Path) -> None:
    from conftest import make_settings

    from app.main import create_app

    app = create_app(make_settings(tmp_path, trusted_proxies="127.0.0.1"))
    with TestClient(app, client=("127.0.0.1", 50000)) as client:
        secure = client.get("/", headers={**HTML, "X-Forwarded-Proto": "https"})

    assert secure.headers["strict-transport-security"] == "max-age=31536000"
    assert "; secure" in secure.headers["set-cookie"].lower()


def test_language_choice_is_remembered(client: TestClient) -> None:
    first = client.get("/?lang=ja", headers=HTML)
    later = client.get("/docs", headers=HTML)

    assert "vc_lang=ja" in first.headers["set-cookie"]
    assert "httponly" in first.headers["set-cookie"].lower()
    assert '<html lang="ja">' in later.text


def test_accept_language_chooses_japanese(client: TestClient) -> None:
    response = client.get("/", headers={**HTML, "Accept-Language": "ja-JP,ja;q=0.9,en;q=0.5"})

    assert '<html lang="ja">' in response.text
    assert "Accept-Language" in response.headers["vary"]
    assert "vc_lang" not in response.headers.get("set-cookie", "")


def test_landing_has_seo_metadata(client: TestClient) -> None:
    html = _page(client, "/?lang=ja")
    base = "http://127.0.0.1:8000"

    assert f'<link rel="canonical" href="{base}/?lang=ja">' in html
    assert f'<link rel="alternate" hreflang="en" href="{base}/?lang=en">' in html
    assert f'<link rel="alternate" hreflang="x-default" href="{base}/">' in html
    assert '<meta property="og:locale" content="ja_JP">' in html
    assert '<meta name="twitter:card" content="summary_large_image">' in html
    description = re.search(r'<meta name="description" content="([^"]+)">', html)
    assert description and "VisionCraftAI" in description.group(1)
    block = re.search(r'<script type="application/ld\+json">(.*?)</script>', html, re.DOTALL)
    assert block
    product = json.loads(block.group(1))
    assert product["@type"] == "SoftwareApplication"
    assert product["inLanguage"] == "ja"
    assert product["offers"][0] == {
        "@type": "Offer",
        "name": "無料デモ",
        "price": "0",
        "priceCurrency": "JPY",
        "url": f"{base}/generate",
    }


def test_each_page_has_its_own_description(client: TestClient) -> None:
    descriptions = set()
    for path in INDEXED_PATHS:
        match = re.search(r'<meta name="description" content="([^"]*)">', _page(client, path))
        assert match and match.group(1), path
        descriptions.add(match.group(1))

    assert len(descriptions) == len(INDEXED_PATHS)


def test_robots_txt_disallows_private_paths(client: TestClient) -> None:
    response = client.get("/robots.txt")
    lines = response.text.splitlines()

    assert response.status_code == 200
    for path in ("/api/", "/dashboard", "/admin"):
        assert f"Disallow: {path}" in lines
    assert "Sitemap: http://127.0.0.1:8000/sitemap.xml" in lines


def test_sitemap_lists_every_page_in_both_languages(client: TestClient) -> None:
    response = client.get("/sitemap.xml")
    namespaces = {
        "s": "http://www.sitemaps.org/schemas/sitemap/0.9",
        "x": "http://www.w3.org/1999/xhtml",
    }
    root = ElementTree.fromstring(response.content)  # noqa: S314 - the app's own sitemap
    locations = [element.text for element in root.findall("s:url/s:loc", namespaces)]

    assert response.headers["content-type"] == "application/xml"
    assert len(locations) == 2 * len(INDEXED_PATHS)
    assert "http://127.0.0.1:8000/docs/errors?lang=ja" in locations
    first = root.find("s:url", namespaces)
    assert first is not None
    alternates = {
        link.get("hreflang"): link.get("href") for link in first.findall("x:link", namespaces)
    }
    assert alternates == {
        "en": "http://127.0.0.1:8000/?lang=en",
        "ja": "http://127.0.0.1:8000/?lang=ja",
        "x-default": "http://127.0.0.1:8000/",
    }


def test_static_file_has_hashed_url_and_long_cache(client: TestClient) -> None:
    url = _static_url(_page(client, "/"), "css/site.css")
    hashed = client.get(url)
    plain = client.get("/static/css/site.css")

    assert hashed.status_code == 200
    assert hashed.headers["cache-control"] == HASHED_CACHE_CONTROL
    assert hashed.headers["content-type"] == "text/css; charset=utf-8"
    assert plain.headers["cache-control"] == PLAIN_CACHE_CONTROL
    assert plain.content == hashed.content


def test_static_file_outside_folder_is_not_found(client: TestClient) -> None:
    for path in ("/static/../settings.py", "/static/%2e%2e/main.py", "/static/css/nope.css"):
        assert client.get(path).status_code == 404


def test_chart_library_is_vendored_with_license(client: TestClient) -> None:
    script = client.get("/static/vendor/chart.js/chart.umd.min.js")
    license_text = client.get("/static/vendor/chart.js/LICENSE.md")

    assert script.status_code == 200
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert b"Chart.js v4.6.1" in script.content[:200]
    assert b"sourceMappingURL" not in script.content
    assert "MIT" in license_text.text or "Permission is hereby granted" in license_text.text


def test_browser_gets_html_not_found_page(client: TestClient) -> None:
    page = client.get("/no-such-page", headers=HTML)
    api = client.get("/api/v1/no-such-route", headers=HTML)

    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert "Page not found" in page.text
    assert api.status_code == 404
    assert api.json()["code"] == "route_not_found"


def test_docs_pages_render_markdown_with_base_url(client: TestClient) -> None:
    html = _page(client, "/docs/quickstart")

    assert "<h1>API quickstart</h1>" in html
    assert '<h2 id="python">Python</h2>' in html
    assert "curl -s http://127.0.0.1:8000/api/v1/images/generations" in html
    assert "{{BASE_URL}}" not in html
    assert client.get("/docs/nothing", headers=HTML).status_code == 404


def _code_value(node: ast.AST) -> ast.expr | None:
    """Return the value assigned to `code` by a keyword argument or class attribute, if any."""
    if isinstance(node, ast.keyword) and node.arg == "code":
        return node.value
    if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "code":
        return node.value
    if isinstance(node, ast.Assign) and [
        getattr(target, "id", None) for target in node.targets
    ] == ["code"]:
        return node.value
    return None


def _raised_error_codes() -> set[str]:
    """Every literal `code="..."` argument and `code = "..."` class attribute in app/."""
    codes = set()
    for path in APP_DIR.rglob("*.py"):
        if path.parts[-2:] == ("web", "error_codes.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            value = _code_value(node)
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                codes.add(value.value)
    return codes


def test_error_page_documents_every_raised_code(client: TestClient) -> None:
    # The HTTP handler also derives codes from its status titles for statuses it does not name.
    derived = {"bad_request", "internal_server_error", "http_error"}
    documented = {item.code for item in ERROR_CODES}
    html = _page(client, "/docs/errors")

    assert _raised_error_codes() | derived == documented
    for code in documented:
        assert f'<tr id="{code}">' in html


def test_problem_type_links_to_error_page_anchor(client: TestClient) -> None:
    problem = client.get("/api/v1/images").json()
    html = _page(client, "/docs/errors")

    assert problem["type"] == "http://127.0.0.1:8000/docs/errors#missing_api_key"
    assert '<tr id="missing_api_key">' in html


def test_commerce_page_shows_seller_settings(tmp_path: Path) -> None:
    from conftest import make_settings

    from app.main import create_app

    settings = make_settings(
        tmp_path, seller_name="株式会社ビジョンクラフト", seller_phone="03-1234-5678"
    )
    with TestClient(create_app(settings)) as client:
        html = _page(client, "/legal/commerce?lang=ja")

    assert "<h1>特定商取引法に基づく表記</h1>" in html
    assert "株式会社ビジョンクラフト" in html
    assert "03-1234-5678" in html
    assert "VISIONCRAFT_SELLER_ADDRESS" in html  # unset in development: a placeholder names it


def _pricing_table(html: str) -> str:
    match = re.search(r'<table class="pricing">(.*?)</table>', html, re.DOTALL)
    assert match is not None
    return match.group(1)


def test_pricing_lists_public_plans_cheapest_first(client: TestClient) -> None:
    table = _pricing_table(_page(client, "/?lang=en"))

    assert re.findall(r'<th scope="row">(.*?)</th>', table) == ["Free", "Pro", "Enterprise"]
    assert "Unlimited" not in table


def test_pricing_shows_plans_tax_inclusive(client: TestClient, settings: object) -> None:
    import asyncio

    from sqlalchemy import update

    from app.container import build_services
    from app.storage.tables import Plan

    async def set_prices() -> None:
        services = build_services(settings)  # type: ignore[arg-type]
        try:
            async with services.sessions.begin() as session:
                await session.execute(update(Plan).where(Plan.name == "pro").values(price=2980))
                await session.execute(
                    update(Plan).where(Plan.name == "enterprise").values(price=980, sort_order=-1)
                )
        finally:
            await services.aclose()

    asyncio.run(set_prices())
    client.app.state.services.plans._loaded_at = None  # type: ignore[attr-defined]
    html = _page(client, "/?lang=ja")
    english = _page(client, "/?lang=en")

    table = _pricing_table(html)
    assert re.findall(r'<th scope="row">(.*?)</th>', table) == ["Free", "Enterprise", "Pro"]
    assert "￥980（税込）" in html
    assert "￥2,980（税込）" in html
    assert "¥2,980 (tax incl.)" in english
    product = json.loads(
        re.search(r'<script type="application/ld\+json">(.*?)</script>', html, re.DOTALL).group(1)  # type: ignore[union-attr]
    )
    assert [offer["price"] for offer in product["offers"]] == ["0", "0", "980", "2980"]


def test_server_error_page_has_security_headers(app: FastAPI) -> None:
    async def fail() -> None:
        raise RuntimeError("a bug in a page handler")

    app.add_api_route("/failing-page", fail)
    with TestClient(app, raise_server_exceptions=False) as client:
        page = client.get("/failing-page", headers=HTML)
        api = client.get("/failing-page")

    assert page.status_code == 500
    assert "Something went wrong" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert api.status_code == 500
    assert api.json()["code"] == "internal_error"


def test_body_too_large_response_has_nosniff(client: TestClient) -> None:
    response = client.post("/contact", content=b"x" * 70_000, headers=HTML)

    assert response.status_code == 413
    assert response.headers["x-content-type-options"] == "nosniff"


def test_pricing_path_leads_to_pricing_section(client: TestClient) -> None:
    response = client.get("/pricing", follow_redirects=False)

    assert response.status_code == 302
    assert response.headers["location"] == "/#pricing"


def test_pricing_credits_have_separators(client: TestClient) -> None:
    table = _pricing_table(_page(client, "/?lang=en"))

    assert "15,000" in table
    assert "1,000" in table
