"""Serials: format, check code, and what a person may type."""

from __future__ import annotations

import pytest

from emeterai.errors import InvalidSerial
from emeterai.serials import ALPHABET, generate_serial, is_well_formed, normalise_serial


def test_generated_serials_are_well_formed_and_distinct() -> None:
    serials = {generate_serial() for _ in range(2000)}
    assert len(serials) == 2000
    assert all(len(s) == 22 and is_well_formed(s) for s in serials)
    assert all(set(s) <= set(ALPHABET) for s in serials)


def test_every_single_typo_and_neighbour_swap_is_caught() -> None:
    for _ in range(20):
        serial = generate_serial()
        for position in range(22):
            for symbol in ALPHABET:
                if symbol != serial[position]:
                    typo = serial[:position] + symbol + serial[position + 1 :]
                    assert not is_well_formed(typo), typo
        for position in range(21):
            a, b = serial[position], serial[position + 1]
            if a != b:
                swapped = serial[:position] + b + a + serial[position + 2 :]
                assert not is_well_formed(swapped), swapped


def test_normalise_accepts_what_people_type() -> None:
    serial = generate_serial()
    typed = "-".join(serial[i : i + 4] for i in range(0, 22, 4)).lower()
    assert normalise_serial(typed) == serial
    if "0" in serial:
        assert normalise_serial(serial.replace("0", "O")) == serial


@pytest.mark.parametrize("text", ["", "ABC", "x" * 100, "!" * 22, "0" * 21 + "1"])
def test_normalise_refuses_non_serials(text: str) -> None:
    with pytest.raises(InvalidSerial):
        normalise_serial(text)
