"""Passwords in URLs: found in every form a URL can carry one, refused, and hidden from logs.

A password on a command line is visible to every user of the machine (`ps`), and one in a URL
that cxrlab logs would land in MLflow. libpq and MLflow read passwords from ~/.pgpass,
PGPASSWORD and MLFLOW_TRACKING_PASSWORD instead.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from cxrlab.config.errors import ConfigError

# Query parameters that carry a secret (libpq's password and sslpassword, common spellings).
_SECRET_KEYS = re.compile(r"^(ssl)?(password|passwd|pwd)$", re.I)
WHERE_INSTEAD = "put it in ~/.pgpass or PGPASSWORD (an MLflow server login: MLFLOW_TRACKING_PASSWORD)"


def has_password(url: str) -> bool:
    """Whether `url` carries a password: user:PASSWORD@, :PASSWORD@ (no user), or ?password=."""
    parts = urlsplit(url)
    if not parts.netloc:
        return False
    userinfo = parts.netloc.rpartition("@")[0]
    return ":" in userinfo or any(_SECRET_KEYS.match(k) for k, _ in parse_qsl(parts.query, keep_blank_values=True))


def redact(url: str) -> str:
    """`url` with every password replaced by ***, for logs and MLflow params."""
    parts = urlsplit(url)
    if not parts.netloc:
        return url
    userinfo, at, host = parts.netloc.rpartition("@")
    if ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    query = parse_qsl(parts.query, keep_blank_values=True)
    hidden = urlencode([(k, "***" if _SECRET_KEYS.match(k) else v) for k, v in query], safe="*")
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{host}", query=hidden if query else parts.query))


def refuse_password(url: str | None, what: str) -> None:
    """A one-line ConfigError when `url` (named by `what`, e.g. --storage) carries a password."""
    if url and has_password(url):
        raise ConfigError(f"{what}: {redact(url)} holds a password, which any user sees in `ps`; {WHERE_INSTEAD}")
