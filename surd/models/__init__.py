"""Model profiles: `real` (published weights) and `tiny` (seeded random models of the same classes).

Importing this package makes torchvision importable beside the CPU torch wheel first.
"""

from storage.torch_compat import install as _install_torch_compat

_install_torch_compat()
