"""Type aliases for xpnet's annotations."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from numpy.typing import NDArray

# An array of any array-API namespace (NumPy, CuPy, array-api-strict, ...).  Those namespaces share
# no static array type, so this is Any: the alias documents intent in signatures.
Array: TypeAlias = Any
# An array-API namespace (``numpy``, ``cupy``, ``array_api_strict``, ...): a module, untyped.
Namespace: TypeAlias = Any
# A NumPy array in host memory (data files, checkpoints, weights returned to the user).
HostArray: TypeAlias = "NDArray[Any]"
