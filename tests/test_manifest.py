"""The one manifest reader (:mod:`taste_toolkit.data.manifest`): round trip and each error."""

import pytest

from taste_toolkit.data.manifest import ManifestError, MissingManifestError, read_manifest, write_manifest
from taste_toolkit.errors import DataPreparationError, InputError, MissingResourceError

ROWS = [
    {"ID": "1-2-0001", "duration": "1.5", "wav": "/data/a.flac", "spk_id": "1", "wrd": "hello, world"},
    {"ID": "1-2-0002", "duration": "2.25", "wav": "b.wav", "spk_id": "1", "wrd": 'a "quoted" word'},
]


def test_round_trip_keeps_rows_columns_and_order(tmp_path):
    path = tmp_path / "train.csv"
    write_manifest(path, ROWS)
    assert read_manifest(path) == ROWS
    assert read_manifest(str(path), columns=("ID", "wav", "wrd")) == ROWS
    assert list(read_manifest(path)[0]) == ["ID", "duration", "wav", "spk_id", "wrd"]


def test_header_only_gives_no_rows_and_spaces_around_names_are_ignored(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("ID,wav\n")
    assert read_manifest(path) == []
    path.write_text(" ID , wav ,wrd\nu1,u1.wav,hi\n\n")  # blank lines are skipped
    assert read_manifest(path, columns=("wav", "wrd")) == [{"ID": "u1", "wav": "u1.wav", "wrd": "hi"}]


def test_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(MissingManifestError, match=r"nope.csv' does not exist\. .*librispeech_prepare.py") as err:
        read_manifest(tmp_path / "nope.csv")
    assert isinstance(err.value, (MissingResourceError, FileNotFoundError, ManifestError))
    with pytest.raises(MissingManifestError, match="is a folder"):
        read_manifest(tmp_path)
    with pytest.raises(MissingManifestError, match=r"^--manifest 'x.csv' does not exist\. Run stage 1 first\.$"):
        read_manifest("x.csv", source="--manifest 'x.csv'", missing_hint="Run stage 1 first.")


def test_missing_column_names_it_and_the_columns_found(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("ID,path,words\nx,y.wav,hi\n")
    with pytest.raises(ManifestError, match=r"lacks column\(s\) \['wav', 'wrd'\]; it has \['ID', 'path', 'words'\]"):
        read_manifest(path, columns=("ID", "wav", "wrd"))
    path.write_text("path,words\ny.wav,hi\n")
    with pytest.raises(ManifestError, match=r"lacks column\(s\) \['ID'\]"):  # unique_ids needs an ID column
        read_manifest(path, columns=("path",))
    assert read_manifest(path, columns=("path",), unique_ids=False) == [{"path": "y.wav", "words": "hi"}]


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("")
    with pytest.raises(ManifestError, match="is empty"):
        read_manifest(path)


@pytest.mark.parametrize("line, fields", [("u2,b.wav", 2), ("u2,b.wav,hi,extra", 4)])
def test_malformed_row_gives_its_line_and_field_count(tmp_path, line, fields):
    path = tmp_path / "m.csv"
    path.write_text(f"ID,wav,wrd\nu1,a.wav,hi\n{line}\n")
    with pytest.raises(ManifestError, match=rf"line 3 has {fields} fields, the header has 3"):
        read_manifest(path)


def test_repeated_id_gives_both_lines(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("ID,wav\nu1,a.wav\nu2,b.wav\nu1,c.wav\n")
    with pytest.raises(ManifestError, match=r"lists ID 'u1' twice \(lines 2 and 4\)"):
        read_manifest(path)
    assert [r["wav"] for r in read_manifest(path, unique_ids=False)] == ["a.wav", "b.wav", "c.wav"]


def test_not_utf8_is_an_error(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes(b"ID,wav\n\xff\xfe,a.wav\n")
    with pytest.raises(ManifestError, match="not UTF-8"):
        read_manifest(path)


def test_errors_are_input_and_data_preparation_errors(tmp_path):
    """Callers that caught InputError (taste tokenize) or DataPreparationError (unit cache) still do."""
    path = tmp_path / "m.csv"
    path.write_text("wav\na.wav\n")
    for kind in (InputError, DataPreparationError):
        with pytest.raises(kind):
            read_manifest(path)


def test_write_manifest_refuses_rows_with_other_keys(tmp_path):
    with pytest.raises(InputError, match="has the keys"):
        write_manifest(tmp_path / "m.csv", [ROWS[0], {"ID": "x"}])
    with pytest.raises(InputError, match="no rows and no columns"):
        write_manifest(tmp_path / "m.csv", [])
    write_manifest(tmp_path / "m.csv", [], columns=["ID", "wav"])
    assert read_manifest(tmp_path / "m.csv") == []


# ---------------------------------------------------------------- the callers use it


def test_taste_tokenize_reads_through_it(tmp_path):
    from taste_toolkit.commands.tokenize import read_manifest as tokenize_manifest

    path = tmp_path / "m.csv"
    path.write_text("ID,wav,wrd\n u1 , a.wav ,hello\nu2,/abs/b.wav,\n")
    items = tokenize_manifest(str(path))
    assert [(i.id, i.wav, i.text) for i in items] == [("u1", str(tmp_path / "a.wav"), "hello"),
                                                      ("u2", "/abs/b.wav", "")]
    with pytest.raises(MissingManifestError, match=r"^--manifest '.*nope.csv' does not exist\."):
        tokenize_manifest(str(tmp_path / "nope.csv"))
    path.write_text("ID,wav,wrd\nu1,a.wav,hi\nu2,b.wav\n")
    with pytest.raises(InputError, match=r"^--manifest .*line 3 has 2 fields"):
        tokenize_manifest(str(path))


def test_taslm_token_cache_reads_through_it(tmp_path):
    from taste_toolkit.taslm.data import encode_manifest

    # the manifest is read before the tokenizer is used: None is never touched
    with pytest.raises(MissingResourceError, match=r"does not exist\. Run the stage-1 recipe first"):
        encode_manifest(None, str(tmp_path / "train.csv"), str(tmp_path / "cache"))
    path = tmp_path / "train.csv"
    path.write_text("ID,wav\nu1,a.wav\n")
    with pytest.raises(ManifestError, match=r"lacks column\(s\) \['wrd'\]"):
        encode_manifest(None, str(path), str(tmp_path / "cache"))


def test_evaluation_set_reads_through_it(tmp_path):
    import numpy as np
    import soundfile as sf

    from taste_toolkit.evaluation.data import load_eval_set

    sf.write(tmp_path / "a.wav", np.zeros(160, dtype=np.float32), 16000)
    path = tmp_path / "test.csv"
    path.write_text("ID,duration,wav\nu1,0.01,a.wav\n")
    (utt,) = load_eval_set(manifest=str(path))
    assert (utt.id, utt.path, utt.text) == ("u1", str(tmp_path / "a.wav"), "")
    path.write_text("ID,wav,wrd\nu1,a.wav, hi \nu1,a.wav,hi\n")  # duplicates: listed by the evaluation set
    with pytest.raises(InputError, match=r"duplicate utterance IDs \['u1'\]"):
        load_eval_set(manifest=str(path))
    path.write_text("ID,path\nu1,a.wav\n")
    with pytest.raises(ManifestError, match=r"lacks column\(s\) \['wav'\]"):
        load_eval_set(manifest=str(path))


def test_unit_cache_uses_the_same_reader():
    import taste_toolkit.data.manifest as manifest
    import taste_toolkit.data.unit_cache as unit_cache

    assert unit_cache.read_manifest is manifest.read_manifest
