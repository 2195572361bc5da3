"""Reading SpeechBrain-style CSV manifests: the one reader every part of the toolkit uses.

A manifest is a UTF-8 CSV file with a header line and one row per utterance,
e.g. ``ID, duration, wav, spk_id, wrd`` as written by
:func:`taste_toolkit.data.librispeech.prepare_librispeech`. Callers name the
columns they need; other columns are kept in the rows as they are.

Errors name the file, say what is wrong and what to do. They are raised as
:class:`ManifestError`, which is both a
:class:`~taste_toolkit.errors.DataPreparationError` (the manifest does not have
the expected layout) and an :class:`~taste_toolkit.errors.InputError` (a bad
file was given), and for a missing file :class:`MissingManifestError`, also a
:class:`~taste_toolkit.errors.MissingResourceError` (so a ``FileNotFoundError``).
"""

import csv
import os

from taste_toolkit.errors import DataPreparationError, InputError, MissingResourceError

#: Columns of the manifests written by the toolkit's data preparation.
STANDARD_COLUMNS = ("ID", "duration", "wav", "spk_id", "wrd")

#: What to do when a manifest is missing, unless the caller says better.
DEFAULT_MISSING_HINT = (
    "Check the path, or write the manifests first: python recipes/librispeech/librispeech_prepare.py "
    "DATA_FOLDER SAVE_FOLDER (recipes/librispeech/train.py does it before training)."
)


class ManifestError(DataPreparationError, InputError):
    """A manifest cannot be read as given: not UTF-8 CSV, a column missing, a malformed row, a repeated ID."""


class MissingManifestError(ManifestError, MissingResourceError):
    """A manifest file does not exist."""


def read_manifest(path, columns=("ID", "wav"), unique_ids=True, source=None, missing_hint=None):
    """Rows of a CSV manifest, checked.

    Parameters
    ----------
    path : str or os.PathLike
        The CSV file.
    columns : sequence of str
        Columns every row must have (``ID`` is added when ``unique_ids``).
        Header names are compared after stripping surrounding spaces.
    unique_ids : bool
        Require an ``ID`` column whose values are all different.
    source : str, optional
        How the messages name the manifest, e.g. ``"--manifest 'test.csv'"``
        for a command-line option (default ``"Manifest '<path>'"``).
    missing_hint : str, optional
        What to do when the file does not exist (default: check the path or run
        the data preparation).

    Returns
    -------
    list of dict
        One ``{column: value}`` per row, in file order, with every header column
        (names stripped of surrounding spaces, values as in the file).

    Raises
    ------
    MissingManifestError
        ``path`` is not a file.
    ManifestError
        The file is not UTF-8 CSV, has no header line, lacks one of
        ``columns``, has a row with more or fewer fields than the header, or
        (with ``unique_ids``) repeats an ID.

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> csv_path = os.path.join(folder, "test.csv")
    >>> write_manifest(csv_path, [{"ID": "u1", "wav": "u1.wav", "wrd": "hello"}])
    >>> read_manifest(csv_path, columns=("ID", "wav", "wrd"))
    [{'ID': 'u1', 'wav': 'u1.wav', 'wrd': 'hello'}]
    """
    path = os.fspath(path)
    source = source or f"Manifest {path!r}"
    required = list(dict.fromkeys((["ID"] if unique_ids else []) + list(columns)))
    expected = (f"Expected a CSV with a header line and the column(s) {required} "
                f"(the toolkit's manifests have {', '.join(STANDARD_COLUMNS)})")
    if not os.path.isfile(path):
        what = "is a folder, not a file" if os.path.isdir(path) else "does not exist"
        raise MissingManifestError(f"{source} {what}. {missing_hint or DEFAULT_MISSING_HINT}")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = [(name or "").strip() for name in (reader.fieldnames or [])]
            if not header:
                raise ManifestError(f"{source} is empty (no header line). {expected}; regenerate it.")
            reader.fieldnames = header
            missing = [c for c in required if c not in header]
            if missing:
                raise ManifestError(
                    f"{source} lacks column(s) {missing}; it has {header}. {expected}: rename the columns "
                    "or regenerate it (e.g. with recipes/librispeech/librispeech_prepare.py)."
                )
            rows, first_line = [], {}
            for row in reader:
                if None in row or None in row.values():
                    n = len(header) + len(row.get(None, [])) if None in row \
                        else sum(v is not None for v in row.values())
                    raise ManifestError(
                        f"{source}: line {reader.line_num} has {n} fields, the header has {len(header)} "
                        "(a truncated file, or a value with a comma that is not quoted). Fix or remove that "
                        "line, or regenerate the manifest."
                    )
                if unique_ids:
                    utt_id = row["ID"]
                    if utt_id in first_line:
                        raise ManifestError(
                            f"{source} lists ID {utt_id!r} twice (lines {first_line[utt_id]} and "
                            f"{reader.line_num}); IDs must be unique. Remove or rename one of them."
                        )
                    first_line[utt_id] = reader.line_num
                rows.append(row)
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{source} is not UTF-8 text ({exc}). Save it as UTF-8 CSV.") from exc
    except csv.Error as exc:
        raise ManifestError(f"{source} is not valid CSV ({exc}). {expected}.") from exc
    return rows


def write_manifest(path, rows, columns=None):
    """Write ``rows`` as a CSV manifest that :func:`read_manifest` reads back.

    Parameters
    ----------
    path : str or os.PathLike
        Output file (its folder must exist); written atomically.
    rows : sequence of dict
        ``{column: value}`` per utterance.
    columns : sequence of str, optional
        Header, in order (default: the keys of the first row). Every row must
        have exactly these keys.

    Raises
    ------
    InputError
        No ``columns`` and no rows, or a row whose keys differ from the header.
    """
    path = os.fspath(path)
    rows = list(rows)
    if columns is None:
        if not rows:
            raise InputError(f"Cannot write the manifest {path!r}: no rows and no columns given; pass columns=.")
        columns = list(rows[0])
    columns = list(columns)
    for number, row in enumerate(rows):
        if set(row) != set(columns):
            raise InputError(f"Row {number} of the manifest {path!r} has the keys {sorted(row)}, "
                             f"not the header's {columns}; give every row the same columns.")
    tmp = path + ".tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
