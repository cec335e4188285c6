from edgelm.stopping import StopStrings


def feed_all(stops, pieces):
    s = StopStrings(stops)
    out = [s.feed(p) for p in pieces]
    return out, s


def test_cuts_before_stop_string_split_across_pieces():
    out, s = feed_all(("###",), ["Hello #", "#", "# world", " more"])
    assert "".join(out) == "Hello "
    assert s.stopped and s.flush() == ""


def test_holds_back_only_what_could_start_a_stop_string():
    s = StopStrings(("</end>",))
    assert s.feed("abc</") == "abc"  # "</" may begin "</end>"
    assert s.feed("div>") == "</div>"  # ruled out: released
    assert not s.stopped


def test_released_at_the_end_when_no_stop_followed():
    s = StopStrings(("STOP",))
    assert s.feed("all ST") == "all "
    assert s.flush() == "ST"


def test_earliest_of_several_stops_wins():
    out, s = feed_all(("b", "xyz"), ["axyzb"])
    assert out == ["a"] and s.stopped


def test_without_stops_everything_passes():
    out, s = feed_all((), ["a", "b"])
    assert out == ["a", "b"] and s.flush() == ""


def test_keep_ends_the_text_after_the_stop_string():
    s = StopStrings(("###",), keep=True)
    out = [s.feed(p) for p in ["Hello #", "#", "# world", " more"]]
    assert "".join(out) == "Hello ###" and s.stopped and s.flush() == ""
