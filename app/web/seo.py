"""Search-engine files and data: robots.txt, sitemap.xml with language alternates, JSON-LD."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import quoteattr

from app.web.i18n import LOCALE_QUERY, SUPPORTED_LOCALES
from app.web.pricing import PlanPrice
from app.web.rendering import PRODUCT_NAME

# Pages that search engines should list, in the order of the sitemap.
INDEXED_PATHS = (
    "/",
    "/generate",
    "/docs",
    "/docs/guide",
    "/docs/quickstart",
    "/docs/errors",
    "/contact",
    "/legal/terms",
    "/legal/privacy",
    "/legal/commerce",
)
# Private or machine-facing paths that crawlers should skip.
DISALLOWED_PATHS = ("/api/", "/dashboard", "/admin", "/account", "/metrics")


def robots_txt(base_url: str) -> str:
    lines = ["User-agent: *", "Allow: /"]
    lines += [f"Disallow: {path}" for path in DISALLOWED_PATHS]
    lines += ["", f"Sitemap: {base_url}/sitemap.xml", ""]
    return "\n".join(lines)


def _url_entry(base_url: str, path: str, locale: str) -> list[str]:
    entry = ["  <url>", f"    <loc>{base_url}{path}?{LOCALE_QUERY}={locale}</loc>"]
    for alternate in SUPPORTED_LOCALES:
        href = quoteattr(f"{base_url}{path}?{LOCALE_QUERY}={alternate}")
        entry.append(f'    <xhtml:link rel="alternate" hreflang="{alternate}" href={href}/>')
    entry.append(
        f'    <xhtml:link rel="alternate" hreflang="x-default" href={quoteattr(base_url + path)}/>'
    )
    entry.append("  </url>")
    return entry


def sitemap_xml(base_url: str, paths: Sequence[str] = INDEXED_PATHS) -> str:
    """Return a sitemap listing each page once per language, with hreflang alternates."""
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9" '
        'xmlns:xhtml="http://www.w3.org/1999/xhtml">',
    ]
    for path in paths:
        for locale in SUPPORTED_LOCALES:
            lines += _url_entry(base_url, path, locale)
    lines += ["</urlset>", ""]
    return "\n".join(lines)


def product_json_ld(
    *,
    base_url: str,
    locale: str,
    description: str,
    plans: Sequence[PlanPrice] | None,
    demo_offer_name: str,
    currency: str,
) -> dict[str, Any]:
    """Describe the product as a schema.org SoftwareApplication with its offers."""
    offers: list[dict[str, Any]] = [
        {
            "@type": "Offer",
            "name": demo_offer_name,
            "price": "0",
            "priceCurrency": currency.upper(),
            "url": f"{base_url}/generate",
        }
    ]
    offers += [
        {
            "@type": "Offer",
            "name": plan.name,
            "price": str(plan.price),
            "priceCurrency": plan.currency,
            "url": f"{base_url}/#pricing",
        }
        for plan in plans or ()
    ]
    return {
        "@context": "https://schema.org",
        "@type": "SoftwareApplication",
        "name": PRODUCT_NAME,
        "applicationCategory": "MultimediaApplication",
        "operatingSystem": "Web",
        "url": f"{base_url}/",
        "inLanguage": locale,
        "description": description,
        "image": f"{base_url}/static/img/og-image.png",
        "offers": offers,
    }
