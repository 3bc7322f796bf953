"""Public pages: landing, generator, docs, error codes and legal pages; robots and sitemap."""

from __future__ import annotations

from babel.numbers import format_decimal
from fastapi import APIRouter, Request
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.exceptions import HTTPException

from app.api.deps import ServicesDep
from app.api.schemas.images import MAX_NEGATIVE_PROMPT_CHARS, MAX_PROMPT_CHARS
from app.generation.options import DEFAULT_ASPECT_RATIO, MAX_IMAGES_PER_REQUEST, PIXELS_AT_1K
from app.settings import SELLER_SETTINGS
from app.web.deps import SiteDep
from app.web.error_codes import ERROR_CODES
from app.web.examples import EXAMPLES
from app.web.i18n import N_
from app.web.pricing import format_price, list_plan_prices
from app.web.seo import product_json_ld, robots_txt, sitemap_xml
from app.web.sessions import current_session

router = APIRouter(include_in_schema=False)

DEMO_ENDPOINT = "/api/v1/demo/generations"
GENERATION_ENDPOINT = "/api/v1/images/generations"
SEO_CACHE_CONTROL = "public, max-age=3600"

# Labels of the generator's choices, translated where they are shown.
STYLE_LABELS = {
    "photographic": N_("Photographic"),
    "digital-art": N_("Digital art"),
    "anime": N_("Anime"),
    "watercolor": N_("Watercolour"),
    "oil-painting": N_("Oil painting"),
    "sketch": N_("Pencil sketch"),
    "pixel-art": N_("Pixel art"),
    "3d-render": N_("3D render"),
    "cinematic": N_("Cinematic"),
}
ASPECT_RATIO_LABELS = {
    "1:1": N_("Square"),
    "2:3": N_("Portrait"),
    "3:2": N_("Landscape"),
    "3:4": N_("Portrait"),
    "4:3": N_("Landscape"),
    "9:16": N_("Tall"),
    "16:9": N_("Wide"),
    "21:9": N_("Ultra-wide"),
}
SELLER_LABELS = {
    "seller_name": N_("Seller"),
    "seller_representative": N_("Representative"),
    "seller_address": N_("Address"),
    "seller_phone": N_("Telephone"),
    "seller_email": N_("Email"),
    "seller_prices_note": N_("Prices"),
    "seller_payment_methods": N_("Payment methods and timing"),
    "seller_delivery_timing": N_("Delivery"),
    "seller_returns_policy": N_("Cancellations and refunds"),
}


@router.get("/", response_class=HTMLResponse)
async def landing(request: Request, site: SiteDep, services: ServicesDep) -> HTMLResponse:
    plans = await list_plan_prices(services.plans, services.settings.currency)
    locale = site.renderer.locale_of(request)
    _ = site.translator(request).gettext
    json_ld = product_json_ld(
        base_url=site.renderer.public_base_url,
        locale=locale,
        description=_("Turn a prompt into images in your browser or through an API."),
        plans=plans,
        demo_offer_name=_("Free demo"),
        currency=services.settings.currency,
    )
    prices = [
        (
            plan,
            format_price(plan.price, locale, plan.currency),
            format_decimal(plan.credits, locale=locale) if plan.credits is not None else "—",
        )
        for plan in plans
    ]
    return site.renderer.render(
        request,
        "landing.html",
        {
            "examples": EXAMPLES,
            "style_labels": STYLE_LABELS,
            "plans": prices if plans else None,
            "json_ld": json_ld,
        },
    )


@router.get("/pricing", include_in_schema=False)
async def pricing() -> RedirectResponse:
    """Send the `purchase_url` of a 402 answer to the landing page's pricing section."""
    return RedirectResponse("/#pricing", status_code=302)


@router.get("/generate", response_class=HTMLResponse)
async def generator(request: Request, site: SiteDep, services: ServicesDep) -> HTMLResponse:
    """The generator: the demo route for visitors, the real one with credits when logged in."""
    session = current_session(request)
    endpoint, max_images, plan_name, credits = DEMO_ENDPOINT, 1, "", 0
    if session is not None:
        plan = await services.plans.get(session.plan)
        endpoint, plan_name = GENERATION_ENDPOINT, plan.display_name
        max_images = min(plan.images_per_request or MAX_IMAGES_PER_REQUEST, MAX_IMAGES_PER_REQUEST)
        credits = (await services.credits.balance(session.account_id)).total
    return site.renderer.render(
        request,
        "generator.html",
        {
            "endpoint": endpoint,
            "plan_name": plan_name,
            "credits": credits,
            "aspect_ratios": [
                (ratio, ASPECT_RATIO_LABELS[ratio], PIXELS_AT_1K[ratio]) for ratio in PIXELS_AT_1K
            ],
            "default_aspect_ratio": DEFAULT_ASPECT_RATIO,
            "style_labels": STYLE_LABELS,
            "max_images": max_images,
            "max_prompt_chars": MAX_PROMPT_CHARS,
            "max_negative_prompt_chars": MAX_NEGATIVE_PROMPT_CHARS,
        },
    )


@router.get("/docs", response_class=HTMLResponse)
async def docs_index(request: Request, site: SiteDep) -> HTMLResponse:
    locale = site.renderer.locale_of(request)
    pages = {name: site.docs.get(name, locale) for name in ("guide", "quickstart")}
    return site.renderer.render(request, "docs_index.html", {"pages": pages})


@router.get("/docs/errors", response_class=HTMLResponse)
async def error_codes(request: Request, site: SiteDep) -> HTMLResponse:
    codes = sorted(ERROR_CODES, key=lambda item: (item.status, item.code))
    return site.renderer.render(request, "error_codes.html", {"codes": codes})


def _markdown_page(request: Request, site: SiteDep, name: str, section: str) -> HTMLResponse:
    document = site.docs.get(name, site.renderer.locale_of(request))
    return site.renderer.render(
        request, "markdown_page.html", {"document": document, "section": section}
    )


@router.get("/docs/{name}", response_class=HTMLResponse)
async def docs_page(name: str, request: Request, site: SiteDep) -> HTMLResponse:
    if name not in {"guide", "quickstart"}:
        raise HTTPException(404, f"No documentation page named {name!r}.")
    return _markdown_page(request, site, name, "docs")


@router.get("/legal/terms", response_class=HTMLResponse)
async def terms(request: Request, site: SiteDep) -> HTMLResponse:
    return _markdown_page(request, site, "terms", "legal")


@router.get("/legal/privacy", response_class=HTMLResponse)
async def privacy(request: Request, site: SiteDep) -> HTMLResponse:
    return _markdown_page(request, site, "privacy", "legal")


@router.get("/legal/commerce", response_class=HTMLResponse)
async def commerce(request: Request, site: SiteDep) -> HTMLResponse:
    """Show the seller details that Japan's Act on Specified Commercial Transactions requires."""
    settings = site.settings
    rows = [
        (SELLER_LABELS[name], getattr(settings, name), f"VISIONCRAFT_{name.upper()}")
        for name in SELLER_SETTINGS
    ]
    return site.renderer.render(request, "commerce.html", {"rows": rows})


@router.get("/robots.txt", response_class=PlainTextResponse)
async def robots(site: SiteDep) -> PlainTextResponse:
    return PlainTextResponse(
        robots_txt(site.renderer.public_base_url), headers={"Cache-Control": SEO_CACHE_CONTROL}
    )


@router.get("/sitemap.xml")
async def sitemap(site: SiteDep) -> Response:
    return Response(
        sitemap_xml(site.renderer.public_base_url),
        media_type="application/xml",
        headers={"Cache-Control": SEO_CACHE_CONTROL},
    )


@router.get("/static/{served_path:path}")
async def static_file(served_path: str, site: SiteDep) -> FileResponse:
    found = site.static.find(served_path)
    if found is None:
        raise HTTPException(404, f"No static file {served_path!r}.")
    return FileResponse(
        found.path, media_type=found.media_type, headers={"Cache-Control": found.cache_control}
    )


@router.get("/favicon.ico")
async def favicon(site: SiteDep) -> FileResponse:
    return await static_file("img/favicon.ico", site)
