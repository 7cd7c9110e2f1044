"""The real-shaped benchmark mailbox has the shape the benchmark claims, the same every time."""

from __future__ import annotations

from itertools import islice

from bench.shaped_corpus import SMALL, folder_messages, shaped_folders, user_folders


def test_shaped_mailbox_looks_like_a_real_one():
    folders = shaped_folders(1200, seed=1)
    counts = sorted((f.count for f in folders), reverse=True)

    assert len(folders) >= 40
    assert sum(f.count < 10 for f in folders) >= len(folders) / 2
    assert max(len(f.path) for f in folders) >= 6
    assert ("Réunions", "Été 2025") in {f.path for f in folders}
    assert ("Éléments envoyés",) in {f.path for f in folders}
    assert sum(counts) == 1200
    assert counts[2] > 2 * counts[3]  # three large folders, well above the rest
    assert len({f.path for f in folders}) == len(folders)


def test_scaling_grows_the_large_folders_and_keeps_the_small_ones_small():
    small, big = shaped_folders(1200, seed=1), shaped_folders(12000, seed=1)

    grown = {f.path: f.count for f in big}

    assert sum(f.count for f in big) == 12000
    for folder in small:
        if folder.path in SMALL:
            assert grown[folder.path] == folder.count < 10
        else:
            assert grown[folder.path] >= folder.count


def test_same_seed_same_messages():
    first, again, other = shaped_folders(seed=5), shaped_folders(seed=5), shaped_folders(seed=6)
    inbox = next(f for f in first if f.path == ("INBOX",))
    raws = [m.raw for m in islice(folder_messages(inbox), 20)]

    assert first == again and first != other
    assert raws == [m.raw for m in islice(folder_messages(inbox), 20)]
    assert len(set(raws)) == 20


def test_a_small_account_holds_what_it_is_asked():
    folders = user_folders(30, seed=7)

    assert sum(f.count for f in folders) == 30
    assert user_folders(30, seed=7) == folders
