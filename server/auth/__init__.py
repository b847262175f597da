"""Authentication (who: from what Envoy verified), authorization (roles) and the audit
trail of the core."""

from server.auth.audit import AuditLog
from server.auth.identity import Identity, identify
from server.auth.interceptor import AuthInterceptor
from server.auth.policy import AccessPolicy

__all__ = ["AccessPolicy", "AuditLog", "AuthInterceptor", "Identity", "identify"]
