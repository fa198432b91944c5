"""A recorded data source is used by what it names, never by the place it names."""

from dango_nb.sources import own_source, recorded_location, source_options


def test_a_preset_is_taken_by_name_and_seed():
    assert own_source({"kind": "synthetic", "preset": "tiny", "seed": 3, "root": "/elsewhere"}) == \
        {"preset": "tiny", "seed": 3, "data_dir": None}
    recorded = {"preset": "tiny", "seed": 0, "data_dir": "/victim", "string_file": None, "dango_folder": None,
                "kuzmin_file": None}
    assert recorded_location(recorded) == ("data_dir", "/victim")
    assert own_source(recorded) is None  # its folder is not used, and no other was given
    assert own_source(recorded, "/mine") == {"preset": "tiny", "seed": 0, "data_dir": "/mine"}


def test_real_data_files_are_taken_by_name_only():
    recorded = {"preset": "small", "seed": 0, "data_dir": None, "string_file": "/a/b/links.v9.1.txt.gz",
                "dango_folder": None, "kuzmin_file": "s1.tsv"}
    assert recorded_location(recorded) == ("string_file", "/a/b/links.v9.1.txt.gz")
    assert own_source(recorded) is None
    assert own_source(recorded, "/mine") == {**recorded, "string_file": "links.v9.1.txt.gz", "data_dir": "/mine"}
    by_name = {**recorded, "string_file": "links.v9.1.txt.gz"}
    assert recorded_location(by_name) is None and own_source(by_name) == by_name
    # a checkpoint's real-data record names its files with --string/--kuzmin only
    assert own_source({"kind": "files", "string": "/a/links.txt", "kuzmin": "/a/s1.tsv"}) is None
    assert source_options({"kind": "files", "string": "/a/links.txt", "kuzmin": "/a/s 1.tsv"}) == \
        "--string /a/links.txt --kuzmin '/a/s 1.tsv'"
    assert source_options(recorded) == "--string /a/b/links.v9.1.txt.gz --kuzmin s1.tsv"
