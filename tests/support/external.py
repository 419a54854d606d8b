"""The independent checks every stamped PDF must pass (DESIGN.md, "Independent checks"),
run through the real Debian tools: poppler's pdfsig and pdftoppm, qpdf, zbarimg and NSS's
certutil. Install them with `make system-deps`.

Page numbers are 1-based, as in pdftoppm. Pixel boxes are (x, y, width, height) at the
rendering resolution, measured from the top-left corner of the rendered page.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

TOOL_TIMEOUT_S = 120
DPI_MAX = 1200

StrPath = str | os.PathLike[str]


def _run(arguments: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        arguments,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=TOOL_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(arguments)} exited with {result.returncode}\n"
            f"--- stdout\n{result.stdout}--- stderr\n{result.stderr}"
        )
    return result


def _check_page(page: int, dpi: int) -> None:
    if page < 1:
        raise ValueError(f"pages are numbered from 1, not {page}")
    if not 1 <= dpi <= DPI_MAX:
        raise ValueError(f"dpi must be within 1..{DPI_MAX}, not {dpi}")


# ---------------------------------------------------------------------------------------
# Signatures: pdfsig with an NSS database that trusts our root


def nss_db(tmp_path: Path, root_pem: bytes) -> str:
    """Create an NSS database under ``tmp_path`` that trusts ``root_pem`` (a PEM CA
    certificate) for signing, and return it as "sql:DIR" for ``pdfsig -nssdir``."""
    directory = Path(tempfile.mkdtemp(prefix="nssdb-", dir=tmp_path))
    database = f"sql:{directory}"
    root_path = directory / "root.pem"
    root_path.write_bytes(root_pem)
    _run(["certutil", "-N", "-d", database, "--empty-password"])
    _run(["certutil", "-A", "-d", database, "-n", "root", "-t", "CT,C,C", "-i", str(root_path)])
    return database


def pdfsig_report(pdf_path: StrPath, nssdir: str) -> str:
    """pdfsig's report on every signature in the file (stdout, then stderr if any)."""
    result = _run(["pdfsig", "-nssdir", nssdir, os.fspath(pdf_path)], check=False)
    return result.stdout + result.stderr


def _signature_blocks(report: str) -> list[list[str]]:
    """Split a pdfsig report into one list of stripped lines per "Signature #N:"."""
    blocks: list[list[str]] = []
    for line in report.splitlines():
        stripped = line.strip()
        if stripped.startswith("Signature #"):
            blocks.append([])
        elif blocks:
            blocks[-1].append(stripped)
    return blocks


def assert_pdfsig_ok(pdf_path: StrPath, nssdir: str) -> None:
    """The last signature (the stamp, applied as the newest revision) is valid, its
    certificate is trusted, and it covers the whole document."""
    report = pdfsig_report(pdf_path, nssdir)
    blocks = _signature_blocks(report)
    if not blocks:
        raise AssertionError(f"pdfsig found no signature in {pdf_path}:\n{report}")
    last = blocks[-1]
    required = (
        "- Signature Validation: Signature is Valid.",
        "- Certificate Validation: Certificate is Trusted.",
        "- Total document signed",
    )
    missing = [line for line in required if line not in last]
    if missing:
        raise AssertionError(
            f"pdfsig: signature #{len(blocks)} of {pdf_path} lacks {missing}:\n{report}"
        )


# ---------------------------------------------------------------------------------------
# Structure: qpdf


def assert_qpdf_ok(pdf_path: StrPath) -> None:
    """``qpdf --check`` passes without errors (exit 2) and without warnings (exit 3)."""
    result = _run(["qpdf", "--check", os.fspath(pdf_path)], check=False)
    if result.returncode != 0:
        kind = {2: "errors", 3: "warnings"}.get(result.returncode, "failure")
        raise AssertionError(
            f"qpdf --check {pdf_path}: {kind} (exit {result.returncode})\n"
            f"{result.stdout}{result.stderr}"
        )


# ---------------------------------------------------------------------------------------
# Pictures: pdftoppm and zbarimg


def _render(
    pdf_path: StrPath,
    page: int,
    dpi: int,
    directory: Path,
    box_px: tuple[int, int, int, int] | None = None,
) -> Path:
    _check_page(page, dpi)
    arguments = ["pdftoppm", "-cropbox", "-png", "-r", str(dpi), "-f", str(page), "-l", str(page)]
    if box_px is not None:
        x, y, width, height = box_px
        if x < 0 or y < 0 or width <= 0 or height <= 0:
            raise ValueError(f"box_px must be (x>=0, y>=0, width>0, height>0), not {box_px}")
        arguments += ["-x", str(x), "-y", str(y), "-W", str(width), "-H", str(height)]
    prefix = directory / "page"
    _run([*arguments, "-singlefile", os.fspath(pdf_path), str(prefix)])
    png = prefix.with_suffix(".png")
    if not png.is_file():
        # pdftoppm exits 0 and writes nothing when the page does not exist.
        raise AssertionError(f"pdftoppm rendered nothing for page {page} of {pdf_path}")
    return png


def render_page_png(pdf_path: StrPath, page: int, dpi: int = 150) -> bytes:
    """Page ``page`` rendered by pdftoppm as PNG bytes."""
    with tempfile.TemporaryDirectory(prefix="render-") as directory:
        return _render(pdf_path, page, dpi, Path(directory)).read_bytes()


def decode_qr(
    pdf_path: StrPath,
    page: int,
    box_px: tuple[int, int, int, int] | None = None,
    dpi: int = 150,
) -> list[str]:
    """The texts of the barcodes zbarimg finds on page ``page`` rendered at ``dpi``, in
    the region ``box_px`` if given. An empty list when there is none."""
    with tempfile.TemporaryDirectory(prefix="decode-qr-") as directory:
        png = _render(pdf_path, page, dpi, Path(directory), box_px)
        result = _run(["zbarimg", "-q", "--raw", str(png)], check=False)
    if result.returncode == 4:  # zbarimg: the image holds no barcode
        return []
    if result.returncode != 0:
        raise AssertionError(
            f"zbarimg exited with {result.returncode}\n{result.stdout}{result.stderr}"
        )
    return [line for line in result.stdout.splitlines() if line]
