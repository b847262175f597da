"""Error conventions shared by every netweave gRPC service."""

from __future__ import annotations

from typing import Final

# google.rpc.ErrorInfo.domain of every error netweave raises.
ERROR_DOMAIN: Final = "o2ims.netweave.io"
