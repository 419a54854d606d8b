"""A verifier reads hostile files: a small upload must never decode without bound."""

from __future__ import annotations

import io
import zlib

import pikepdf

from emeterai.pdf.examine import _Budget, find_stamp_pictures


def _bomb(decoded_bytes: int) -> bytes:
    pdf = pikepdf.new()
    page = pdf.add_blank_page(page_size=(595, 842))
    zeros = zlib.compressobj(9)
    chunk = b"\0" * (1 << 20)
    compressed = b"".join(zeros.compress(chunk) for _ in range(decoded_bytes >> 20))
    compressed += zeros.flush()
    stream = pikepdf.Stream(pdf, compressed)
    stream.Filter = pikepdf.Name.FlateDecode
    page.obj.Contents = pdf.make_indirect(stream)
    buffer = io.BytesIO()
    pdf.save(buffer)
    return buffer.getvalue()


def test_a_deflate_bomb_is_read_only_up_to_the_budget() -> None:
    data = _bomb(64 << 20)
    assert len(data) < 200_000
    with pikepdf.open(io.BytesIO(data)) as pdf:
        budget = _Budget(content_bytes=1 << 20)
        decoded = budget.read(pdf.pages[0].obj.Contents)
    assert len(decoded) == 1 << 20
    assert budget.read(pdf.pages[0].obj.Contents) == b""  # the budget is spent


def test_scanning_a_bomb_finds_nothing_and_returns() -> None:
    assert find_stamp_pictures(_bomb(256 << 20)) == ()
