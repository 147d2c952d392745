"""Input classification: UTF-8, cp1251 Russian, other encodings, binary garbage, documents."""

from __future__ import annotations

import io
import zipfile

import pytest

from llm_service.errors import PermanentTaskError
from llm_worker.decoding import DocumentInput, TextInput, classify, decode_text, sniff_document

RUSSIAN = "Съешь же ещё этих мягких французских булок, да выпей чаю. «Цитата» — №5."


def test_utf8_with_and_without_bom() -> None:
    assert decode_text(RUSSIAN.encode()) == TextInput(RUSSIAN, "utf-8")
    assert decode_text(b"\xef\xbb\xbf" + RUSSIAN.encode()).text == RUSSIAN


def test_cp1251_russian_is_detected() -> None:
    assert decode_text(RUSSIAN.encode("cp1251")) == TextInput(RUSSIAN, "cp1251")


def test_western_single_byte_text_is_not_taken_for_russian() -> None:
    text = "Café déjà vu, naïve résumé of the façade. " * 3
    decoded = decode_text(text.encode("latin-1"))
    # Which Western code page is a guess (charset-normalizer's); that it is not cp1251 is the point.
    assert decoded.encoding != "cp1251" and decoded.text.startswith("Caf")


@pytest.mark.parametrize("garbage", [bytes(range(256)) * 4, b"\x00\x01\x02text", bytes([0x8F, 0x03] * 200)])
def test_binary_garbage_is_not_text(garbage: bytes) -> None:
    with pytest.raises(PermanentTaskError) as caught:
        classify(garbage, "data.txt")
    assert caught.value.code == "INPUT_NOT_TEXT"


def test_documents_by_extension_and_by_magic() -> None:
    pdf = classify(b"%PDF-1.7 ...", "docs/report.bin")
    assert isinstance(pdf, DocumentInput) and pdf.content_type == "application/pdf"
    assert pdf.filename == "report.bin.pdf"
    by_name = classify(b"whatever", "scan.PNG")
    assert isinstance(by_name, DocumentInput) and by_name.filename == "scan.PNG"


def test_docx_is_told_from_other_zips() -> None:
    def zipped(name: str) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr(name, "x")
        return buffer.getvalue()

    assert sniff_document(zipped("word/document.xml")) == ".docx"
    assert sniff_document(zipped("ppt/presentation.xml")) == ".pptx"
    assert sniff_document(zipped("random.txt")) is None
    assert sniff_document(b"PK\x03\x04broken") is None
    assert isinstance(classify(zipped("word/document.xml"), "upload"), DocumentInput)


def test_plain_text_file_is_text() -> None:
    assert classify(b"hello", "a.md") == TextInput("hello", "utf-8")
