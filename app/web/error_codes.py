"""Every error `code` a client can receive, for the /docs/errors page.

A problem's `type` is `{PUBLIC_BASE_URL}/docs/errors#{code}`, so each entry here is the anchor
that such a link opens. A test compares this list with the codes raised in `app/`.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.web.i18n import N_


@dataclass(frozen=True)
class ErrorCode:
    """One documented code: its HTTP status (or class), what it means and what to do (message ids)."""

    code: str
    status: str
    meaning: str
    action: str


_UNSORTED_CODES: tuple[ErrorCode, ...] = (
    ErrorCode(
        "invalid_json",
        "400",
        N_("The request body is not valid JSON."),
        N_("Send one JSON object and check quotes and commas."),
    ),
    ErrorCode(
        "bad_request",
        "400",
        N_("The request could not be read."),
        N_("Check the headers and the body, then retry."),
    ),
    ErrorCode(
        "service_error",
        "400",
        N_("The request failed for a reason given in the detail."),
        N_("Read the detail; it names the value to change."),
    ),
    ErrorCode(
        "missing_api_key",
        "401",
        N_("No API key was sent."),
        N_("Send the header Authorization: Bearer followed by your API key."),
    ),
    ErrorCode(
        "malformed_authorization",
        "401",
        N_("The Authorization header is not a Bearer token."),
        N_("Write the header as Authorization: Bearer followed by your API key."),
    ),
    ErrorCode(
        "malformed_api_key",
        "401",
        N_("The API key is not in our format or its checksum does not match."),
        N_("Copy the whole key again; it starts with vc_live_ or vc_test_."),
    ),
    ErrorCode(
        "invalid_api_key",
        "401",
        N_("No live API key matches the key that was sent."),
        N_("Check that the key belongs to this server, or create a new one."),
    ),
    ErrorCode(
        "revoked_api_key",
        "401",
        N_("The API key was revoked."),
        N_("Create a new key and replace the revoked one."),
    ),
    ErrorCode(
        "invalid_image_signature",
        "401",
        N_("The signed image link is invalid or has expired."),
        N_("Fetch a fresh link from GET /api/v1/images/{id}."),
    ),
    ErrorCode(
        "permission_denied",
        "403",
        N_("The caller is known but may not do this."),
        N_("Use an account or key that has the permission."),
    ),
    ErrorCode(
        "missing_scope",
        "403",
        N_("The API key lacks the scope this route needs."),
        N_("Create a key with the scope named in the detail."),
    ),
    ErrorCode(
        "admin_scope_not_allowed",
        "403",
        N_("Only an admin account's keys may carry the admin scope."),
        N_("Leave out the admin scope, or ask an administrator."),
    ),
    ErrorCode(
        "invalid_csrf_token",
        "403",
        N_("The form's security token does not match this browser session."),
        N_("Reload the page and send the form again."),
    ),
    ErrorCode(
        "missing_csrf_token",
        "403",
        N_("A form or browser call came without its security token."),
        N_("Send forms from our pages; scripts send the page's token in X-CSRF-Token."),
    ),
    ErrorCode(
        "missing_csrf_cookie",
        "403",
        N_("The browser sent no security cookie with the form."),
        N_("Allow cookies for this site, reload the page and send the form again."),
    ),
    ErrorCode(
        "expired_csrf_token",
        "403",
        N_("The page that holds the form is too old."),
        N_("Reload the page and send the form again."),
    ),
    ErrorCode(
        "not_found",
        "404",
        N_("The requested object does not exist."),
        N_("Check the id in the URL."),
    ),
    ErrorCode(
        "route_not_found",
        "404",
        N_("No route matches the method and path."),
        N_("Check the path against the API reference; every route starts with /api/v1."),
    ),
    ErrorCode(
        "image_not_found",
        "404",
        N_("No image with this id belongs to your account."),
        N_("List your images with GET /api/v1/images to find the id."),
    ),
    ErrorCode(
        "image_content_not_found",
        "404",
        N_("The image's record exists but its bytes are gone from storage."),
        N_("Generate the image again; stored images are deleted after the retention period."),
    ),
    ErrorCode(
        "generation_not_found",
        "404",
        N_("No generation with this id belongs to your account."),
        N_("Check the id returned by POST /api/v1/images/generations."),
    ),
    ErrorCode(
        "account_not_found",
        "404",
        N_("No account matches the email or id."),
        N_("Check the spelling, or create the account first."),
    ),
    ErrorCode(
        "api_key_not_found",
        "404",
        N_("No API key has this id."),
        N_("List the keys to find the id; revoked keys keep their id."),
    ),
    ErrorCode(
        "method_not_allowed",
        "405",
        N_("The route exists but not for this HTTP method."),
        N_("Use the method the API reference gives for this route."),
    ),
    ErrorCode(
        "conflict",
        "409",
        N_("The request conflicts with the current state."),
        N_("Read the current state, then retry."),
    ),
    ErrorCode(
        "idempotency_key_in_use",
        "409",
        N_("A request with this Idempotency-Key is still running."),
        N_("Wait for it to finish, then retry with the same key to get its result."),
    ),
    ErrorCode(
        "email_taken",
        "409",
        N_("An account with this email already exists."),
        N_("Sign in, or use another email address."),
    ),
    ErrorCode(
        "request_too_large",
        "413",
        N_("The request body is larger than the server accepts."),
        N_("Send a smaller body; prompts have a length limit."),
    ),
    ErrorCode(
        "unsupported_media_type",
        "415",
        N_("The body is not sent as JSON."),
        N_("Send the header Content-Type: application/json."),
    ),
    ErrorCode(
        "validation_error",
        "422",
        N_("A field is missing or has a value that is not accepted."),
        N_("The errors member names each field and what is accepted."),
    ),
    ErrorCode(
        "invalid_request",
        "422",
        N_("A value in the request is not acceptable."),
        N_("Read the detail; it names the value and what is accepted."),
    ),
    ErrorCode(
        "unknown_model",
        "422",
        N_("The model id is not offered by this server."),
        N_("Pick an id from GET /api/v1/models, or leave model out."),
    ),
    ErrorCode(
        "unsupported_image_size",
        "422",
        N_("The model does not offer this image size."),
        N_("Use an image size listed for the model in GET /api/v1/models."),
    ),
    ErrorCode(
        "invalid_idempotency_key",
        "422",
        N_("The Idempotency-Key header is empty or too long."),
        N_("Send 1 to 255 characters, for example a UUID."),
    ),
    ErrorCode(
        "idempotency_key_reused",
        "422",
        N_("This Idempotency-Key was used for a different request."),
        N_("Use a new key for a new request."),
    ),
    ErrorCode(
        "invalid_cursor",
        "422",
        N_("The paging cursor is not one that the server returned."),
        N_("Pass next_cursor from the previous page unchanged, or leave it out."),
    ),
    ErrorCode(
        "content_policy_violation",
        "422",
        N_("The safety filters blocked the prompt or the generated image."),
        N_("Rephrase the prompt and try again."),
    ),
    ErrorCode(
        "invalid_scope",
        "422",
        N_("A scope name is unknown, or no scope was given."),
        N_("Use images:generate, images:read, keys:manage or admin."),
    ),
    ErrorCode(
        "invalid_key_name",
        "422",
        N_("The key name is empty or too long."),
        N_("Give a name of 1 to 100 characters."),
    ),
    ErrorCode(
        "invalid_contact_message",
        "422",
        N_("A field of the contact form is missing or too long."),
        N_("Correct the fields marked on the form and send it again."),
    ),
    ErrorCode(
        "rate_limited",
        "429",
        N_("Too many requests in a short time."),
        N_("Wait for the seconds in Retry-After, then retry."),
    ),
    ErrorCode(
        "backend_rate_limited",
        "429",
        N_("The image backend's quota is used up for now."),
        N_("Wait for the seconds in Retry-After, then retry."),
    ),
    ErrorCode(
        "contact_rate_limited",
        "429",
        N_("Too many contact messages from your address in the last hour."),
        N_("Wait an hour, or write to the email address on the legal notice page."),
    ),
    ErrorCode(
        "internal_error",
        "500",
        N_("The server failed unexpectedly. The failure was logged."),
        N_("Retry later; quote the request_id when you contact us."),
    ),
    ErrorCode(
        "internal_server_error",
        "500",
        N_("The server failed unexpectedly. The failure was logged."),
        N_("Retry later; quote the request_id when you contact us."),
    ),
    ErrorCode(
        "http_error",
        "4xx",
        N_("The HTTP request failed for a reason given in the detail."),
        N_("Read the detail and the status code."),
    ),
    ErrorCode(
        "backend_error",
        "502",
        N_("The image backend failed."),
        N_("Retry later; nothing was charged for the failed request."),
    ),
    ErrorCode(
        "backend_unavailable",
        "503",
        N_("The image backend is not configured correctly on the server."),
        N_("Tell the operator; the detail names the setting to fix."),
    ),
    ErrorCode(
        "image_store_unavailable",
        "503",
        N_("The image storage cannot be reached or is not configured correctly."),
        N_("Retry later; if it persists, tell the operator, because the detail names the setting."),
    ),
    ErrorCode(
        "service_starting",
        "503",
        N_("The server is still starting and waits for its database or image backend."),
        N_("Retry after the seconds in the Retry-After header."),
    ),
    ErrorCode(
        "backend_timeout",
        "504",
        N_("The image backend did not answer in time."),
        N_("Retry later, perhaps with fewer images per request."),
    ),
    ErrorCode(
        "insufficient_credits",
        "402",
        N_("The account's credits do not cover the price of the request."),
        N_(
            "Buy a credit pack or upgrade the plan; the problem names the balance, the price and where to buy."
        ),
    ),
    ErrorCode(
        "invalid_metrics_token",
        "401",
        N_("The metrics routes need the metrics token, and it was missing or wrong."),
        N_("Send Authorization: Bearer with the value of VISIONCRAFT_METRICS_TOKEN."),
    ),
    ErrorCode(
        "scope_not_held",
        "403",
        N_("A key cannot create another key with scopes that it does not hold itself."),
        N_("Ask for fewer scopes, or use a key that holds them."),
    ),
    ErrorCode(
        "admin_only",
        "403",
        N_("Only an admin account may use the admin routes."),
        N_("Use a key of an admin account that carries the admin scope."),
    ),
    ErrorCode(
        "system_account",
        "403",
        N_("The account is used by the service itself and cannot hold keys."),
        N_("Create keys for an ordinary account."),
    ),
    ErrorCode(
        "plan_not_found",
        "404",
        N_("No plan has that name."),
        N_("Use one of the plans that the detail lists."),
    ),
    ErrorCode(
        "invalid_email",
        "422",
        N_("The value is not an email address."),
        N_("Give an address such as name@example.com."),
    ),
    ErrorCode(
        "password_too_short",
        "422",
        N_("The password is too short."),
        N_("Use a longer password; the detail says the minimum length."),
    ),
    ErrorCode(
        "password_too_long",
        "422",
        N_("The password is longer than the service accepts."),
        N_("Use a shorter password; the detail says the maximum length."),
    ),
    ErrorCode(
        "password_too_common",
        "422",
        N_("The password is one that attackers try first, such as a common password."),
        N_("Choose a longer, less predictable password, such as several unrelated words."),
    ),
    ErrorCode(
        "invalid_email_link",
        "422",
        N_("The link from the email is invalid or was already used."),
        N_("Ask for a new link on the page that sent it."),
    ),
    ErrorCode(
        "expired_email_link",
        "422",
        N_("The link from the email has expired."),
        N_("Ask for a new link on the page that sent it."),
    ),
    ErrorCode(
        "invalid_credits",
        "422",
        N_("The number of credits to grant is out of range."),
        N_("Grant a whole number of credits within the range that the detail names."),
    ),
    ErrorCode(
        "invalid_reason",
        "422",
        N_("The reason for a credit grant is empty or too long."),
        N_("Give a reason of 1 to 500 characters."),
    ),
    ErrorCode(
        "invalid_date_range",
        "422",
        N_("The end of the date range is before its start."),
        N_("Give a `from` date on or before the `to` date."),
    ),
    ErrorCode(
        "too_many_images",
        "422",
        N_("The request asks for more images than the plan allows per request."),
        N_("Lower `n` to the limit that the detail names, or upgrade the plan."),
    ),
    ErrorCode(
        "rate_limit_exceeded",
        "429",
        N_("The key or its account sent more requests per minute than its plan allows."),
        N_("Wait for the seconds in Retry-After, or upgrade the plan."),
    ),
    ErrorCode(
        "too_many_concurrent_generations",
        "429",
        N_("The plan's limit of generations running at once is reached."),
        N_("Retry when a running generation finishes, or upgrade the plan."),
    ),
    ErrorCode(
        "too_many_blocked_prompts",
        "429",
        N_("Too many of this key's prompts were blocked by the safety filters this hour."),
        N_("Review what is being sent and retry in the next hour."),
    ),
    ErrorCode(
        "demo_rate_limit_exceeded",
        "429",
        N_("The demo's limit of images per minute from one address is reached."),
        N_("Wait for the seconds in Retry-After, or create an account."),
    ),
    ErrorCode(
        "demo_daily_limit_exceeded",
        "429",
        N_("The demo's limit of images per day from one address is reached."),
        N_("Come back after midnight UTC, or create an account."),
    ),
    ErrorCode(
        "login_rate_limited",
        "429",
        N_("Too many log-in attempts for this email address or from this network."),
        N_("Wait for the minutes the page names, or reset the password."),
    ),
    ErrorCode(
        "mail_rate_limited",
        "429",
        N_("Too many mails were asked for this email address or from this network."),
        N_("Wait an hour before asking for another link."),
    ),
    ErrorCode(
        "mail_failed",
        "503",
        N_("The mail could not be handed to the mail server."),
        N_("Retry later; operators check VISIONCRAFT_SMTP_URL and the log."),
    ),
    ErrorCode(
        "capacity_exceeded",
        "503",
        N_("The service reached its daily cap on spending with the image provider."),
        N_("Retry after midnight UTC; test keys and the demo still work."),
    ),
    ErrorCode(
        "missing_signature",
        "400",
        N_("A webhook request came without the Stripe-Signature header."),
        N_("Only Stripe sends webhooks here; check the endpoint URL in the Stripe dashboard."),
    ),
    ErrorCode(
        "malformed_signature",
        "400",
        N_("The Stripe-Signature header is not in Stripe's format."),
        N_("Send webhooks straight from Stripe; a proxy must not change the header."),
    ),
    ErrorCode(
        "invalid_signature",
        "400",
        N_("The Stripe-Signature header does not match the webhook body."),
        N_("Set the endpoint's signing secret on the server, and let no proxy change the body."),
    ),
    ErrorCode(
        "stale_signature",
        "400",
        N_("The webhook signature is older than five minutes."),
        N_("Check the server's clock; Stripe signs each retry anew."),
    ),
    ErrorCode(
        "invalid_payload",
        "400",
        N_("The signed webhook body is not a Stripe event."),
        N_("Send Stripe's events unchanged."),
    ),
    ErrorCode(
        "pack_not_found",
        "404",
        N_("No credit pack has that name."),
        N_("Use one of the packs that the detail lists, or see GET /api/v1/plans."),
    ),
    ErrorCode(
        "subscription_exists",
        "409",
        N_("The account already has a subscription."),
        N_("Change or cancel the plan in the billing portal instead."),
    ),
    ErrorCode(
        "plan_not_for_sale",
        "422",
        N_("The plan is free or internal and cannot be bought."),
        N_("Choose a paid plan from GET /api/v1/plans."),
    ),
    ErrorCode(
        "invalid_redirect_url",
        "422",
        N_("A return address for the payment pages points outside this site."),
        N_("Give a URL that starts with this site's address, or leave it out."),
    ),
    ErrorCode(
        "billing_not_configured",
        "503",
        N_("Billing is not set up on this server."),
        N_("Tell the operator; the detail names the Stripe settings to set."),
    ),
    ErrorCode(
        "billing_unavailable",
        "503",
        N_("Billing could not reach Stripe or Stripe failed."),
        N_("Retry in a minute; nothing was charged."),
    ),
    ErrorCode(
        "billing_catalog_not_synced",
        "503",
        N_("The plan or pack has no matching price in Stripe yet."),
        N_("Retry later; the operator must run visioncraft stripe sync."),
    ),
    ErrorCode(
        "webhook_processing_failed",
        "503",
        N_("A Stripe event was stored but could not be processed yet."),
        N_("Nothing to do: Stripe sends the event again and it is processed then."),
    ),
)

# Listed by status; codes of one status keep the order above.
ERROR_CODES = tuple(sorted(_UNSORTED_CODES, key=lambda item: item.status))
