"""The account mails, in the reader's language: email verification and password reset."""

from __future__ import annotations

from email.message import EmailMessage
from urllib.parse import urlencode

from babel.support import NullTranslations

from app.accounts.email_tokens import RESET_PASSWORD_TTL_S, VERIFY_EMAIL_TTL_S
from app.web.i18n import LOCALE_QUERY
from app.web.rendering import PRODUCT_NAME


def _message(sender: str, recipient: str, subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = subject
    message.set_content(body)
    return message


def link(base_url: str, path: str, token: str, locale: str) -> str:
    return f"{base_url}{path}?{urlencode({'token': token, LOCALE_QUERY: locale})}"


def verification_mail(
    translations: NullTranslations, *, sender: str, recipient: str, url: str
) -> EmailMessage:
    _ = translations.gettext
    hours = VERIFY_EMAIL_TTL_S // 3600
    body = "\n\n".join(
        [
            _("Welcome to %(product)s.") % {"product": PRODUCT_NAME},
            _("Confirm your email address by opening this link:"),
            url,
            _("The link works for %(hours)s hours. If you did not sign up, ignore this mail.")
            % {"hours": hours},
        ]
    )
    subject = _("Confirm your email address for %(product)s") % {"product": PRODUCT_NAME}
    return _message(sender, recipient, subject, body + "\n")


def password_reset_mail(
    translations: NullTranslations, *, sender: str, recipient: str, url: str
) -> EmailMessage:
    _ = translations.gettext
    minutes = RESET_PASSWORD_TTL_S // 60
    body = "\n\n".join(
        [
            _("Someone asked to reset the password of your %(product)s account.")
            % {"product": PRODUCT_NAME},
            _("Choose a new password by opening this link:"),
            url,
            _(
                "The link works for %(minutes)s minutes and only once. If you did not ask for it, "
                "ignore this mail: your password stays as it is."
            )
            % {"minutes": minutes},
        ]
    )
    subject = _("Reset your %(product)s password") % {"product": PRODUCT_NAME}
    return _message(sender, recipient, subject, body + "\n")
