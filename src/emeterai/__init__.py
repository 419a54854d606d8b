"""emeterai: Indonesia's e-Meterai, the electronic stamp duty, that does not fall over."""

import warnings

__version__ = "0.1.0"

# cryptography 50 deprecated DSA, and pyHanko 0.38 imports its key class to recognise DSA
# keys. emeterai signs with ECDSA and never sees a DSA key, so the warning would only be
# noise on every command that stamps or verifies. Only that warning, only from pyHanko.
warnings.filterwarnings("ignore", message="DSA is deprecated", module=r"pyhanko\.")
