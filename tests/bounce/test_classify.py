"""Reply classification: the built-in rules against a corpus of real replies, the rule
format, operator rules checked before the built-ins, and the CLI output."""

from __future__ import annotations

from pathlib import Path

import pytest

from mta.bounce import Action, Category, Classifier, RulesError, classify_main, parse_rules
from mta.config import parse_config
from mta.rfc5321 import Reply

HERE = Path(__file__).parent


def _corpus() -> list[tuple[str, str | None, str]]:
    cases = []
    for line in (HERE / "corpus.txt").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        expected, _, reply = line.partition(" | ")
        category, _, action = expected.strip().partition(" ")
        cases.append((category, action or None, reply.replace("\\n", "\n")))
    return cases


CORPUS = _corpus()


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier.load()


@pytest.mark.parametrize(("category", "action", "text"), CORPUS,
                         ids=[c[2][:60] for c in CORPUS])
def test_corpus_reply_is_classified(classifier: Classifier, category: str,
                                    action: str | None, text: str) -> None:
    reply = Reply.parse(text)
    got = classifier.classify(reply)
    assert (got.category, str(got.action)) == (
        category, action or ("retry" if reply.is_transient else "bounce")), got.rule


def test_corpus_covers_every_category() -> None:
    assert {c for c, _, _ in CORPUS} == {c.value for c in Category}


def test_every_builtin_rule_is_exercised_by_the_corpus(classifier: Classifier) -> None:
    used = {classifier.classify(Reply.parse(t)).rule for _, _, t in CORPUS}
    unused = [r.name for r in classifier.rules if r.name not in used]
    # A few catch-alls are kept for replies the corpus does not (yet) hold.
    assert len(unused) <= len(classifier.rules) // 4, unused


def test_no_rule_matches_defaults_by_reply_class(classifier: Classifier) -> None:
    """RFC 5321 4.2.1: 4yz is transient (retry), 5yz permanent (bounce)."""
    assert str(classifier.classify(Reply(451, None, "zzz"))) == "other retry -"
    assert str(classifier.classify(Reply(554, None, "zzz"))) == "other bounce -"


def test_positive_reply_is_not_a_failure(classifier: Classifier) -> None:
    with pytest.raises(ValueError):
        classifier.classify(Reply(250, "2.0.0", "ok"))


def test_rule_name_is_reported(classifier: Classifier) -> None:
    got = classifier.classify(Reply.parse(
        "550 5.1.1 The email account that you tried to reach does not exist."))
    assert got.rule == "gmail-no-such-account"


# --- rule format ------------------------------------------------------------------------

def test_first_matching_rule_in_file_order_wins() -> None:
    rules = parse_rules('''
[[rule]]
name = "first"
category = "policy"
text = "woot"
[[rule]]
name = "second"
category = "spam_block"
text = ["woot", "aaa"]
''', "t.toml")
    c = Classifier(rules)
    assert c.classify(Reply(550, None, "x woot y")).rule == "first"
    assert c.classify(Reply(550, None, "aaa")).rule == "second"


def test_all_conditions_of_a_rule_must_hold() -> None:
    c = Classifier(parse_rules('''
[[rule]]
name = "r"
category = "mailbox_full"
code = ["45x", "552"]
enhanced = "x.2.2"
text = "quota"
''', "t.toml"))
    assert c.classify(Reply(452, "4.2.2", "over quota")).rule == "r"
    assert c.classify(Reply(552, "5.2.2", "Quota!")).rule == "r"  # case-insensitive
    assert c.classify(Reply(550, "5.2.2", "quota")).rule == ""  # code
    assert c.classify(Reply(452, "4.2.1", "quota")).rule == ""  # enhanced
    assert c.classify(Reply(452, "4.2.2", "full")).rule == ""  # text


def test_enhanced_none_matches_only_replies_without_enhanced_status() -> None:
    c = Classifier(parse_rules('''
[[rule]]
name = "bare"
category = "message_too_large"
code = "552"
enhanced = "none"
''', "t.toml"))
    assert c.classify(Reply(552, None, "too big")).rule == "bare"
    assert c.classify(Reply(552, "5.2.2", "too big")).rule == ""


def test_text_anchors_apply_to_the_reply_text() -> None:
    c = Classifier(parse_rules('''
[[rule]]
name = "anchored"
category = "other"
text = "^exactly this$"
''', "t.toml"))
    assert c.classify(Reply(550, "5.0.0", "Exactly this")).rule == "anchored"
    assert c.classify(Reply(550, "5.0.0", "not exactly this")).rule == ""
    # Escapes keep their meaning although literals are folded to lower case.
    c = Classifier(parse_rules(
        '[[rule]]\nname = "esc"\ncategory = "other"\ntext = "\\\\SABC\\\\s\\\\d+"\n', "t"))
    assert c.classify(Reply(550, None, "xABC 42")).rule == "esc"
    assert c.classify(Reply(550, None, " ABC 42")).rule == ""


def test_invalid_rules_are_reported_with_file_and_key() -> None:
    with pytest.raises(RulesError) as e:
        parse_rules('''
[[rule]]
name = "a"
category = "nope"
code = "6xx"
enhanced = "5.1"
text = "("
action = "later"
colour = "red"
[[rule]]
name = "a"
category = "policy"
[[rule]]
name = "g"
category = "policy"
text = "(?P<x>a)"
''', "ops.toml")
    errors = "\n".join(e.value.errors)
    for expected in ["ops.toml: rule[0].category:", "ops.toml: rule[0].code: invalid",
                     "ops.toml: rule[0].enhanced: invalid", "ops.toml: rule[0].text: invalid",
                     "ops.toml: rule[0].action:", "ops.toml: rule[0].colour: unknown key",
                     "ops.toml: rule[1].name: duplicate", "ops.toml: rule[1]: needs at least",
                     "ops.toml: rule[2].text: named groups"]:
        assert expected in errors


# --- operator rules ([bounce] rules) ----------------------------------------------------

OPERATOR_RULES = '''
# This provider's 5.7.1 is a temporary block in practice: retry it.
[[rule]]
name = "example-soft-block"
category = "spam_block"
action = "retry"
code = "550"
text = "example\\\\.net temporary block"

# A 4xx that never clears for this receiver: bounce it.
[[rule]]
name = "example-gone"
category = "invalid_recipient"
action = "bounce"
code = "450"
text = "mailbox gone"

# Same name as a built-in: replaces it.
[[rule]]
name = "gmail-no-such-account"
category = "other"
text = "The email account that you tried to reach does not exist"
'''


def _config(tmp_path: Path) -> object:
    rules = tmp_path / "rules.toml"
    rules.write_text(OPERATOR_RULES)
    return parse_config(f'[bounce]\nrules = "{rules.name}"\n', str(tmp_path / "c.toml"),
                        tmp_path)


def test_operator_rules_come_before_builtins_and_override_action(tmp_path: Path) -> None:
    c = Classifier.from_config(_config(tmp_path))
    soft = c.classify(Reply.parse("550 5.7.1 example.net temporary block, see blocklist"))
    assert (soft.category, soft.action, soft.rule) == (
        Category.SPAM_BLOCK, Action.RETRY, "example-soft-block")
    gone = c.classify(Reply.parse("450 4.2.1 mailbox gone"))
    assert (gone.category, gone.action) == (Category.INVALID_RECIPIENT, Action.BOUNCE)
    gmail = c.classify(Reply.parse(
        "550 5.1.1 The email account that you tried to reach does not exist."))
    assert (gmail.category, gmail.rule) == (Category.OTHER, "gmail-no-such-account")
    # Everything else still meets the built-ins.
    assert c.classify(Reply.parse("552 5.2.2 Mailbox full")).category == Category.MAILBOX_FULL


def test_operator_rules_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\nname = "x"\ncategory = "policy"\ntext = "["\n')
    with pytest.raises(RulesError) as e:
        Classifier.load(bad)
    assert e.value.errors[0].startswith(f"{bad}: rule[0].text: invalid regex")
    with pytest.raises(RulesError) as e:
        Classifier.load(tmp_path / "missing.toml")
    assert "cannot read" in e.value.errors[0]


# --- `mta bounce classify` --------------------------------------------------------------

def test_cli_prints_category_action_rule(capsys: pytest.CaptureFixture[str]) -> None:
    assert classify_main("550 5.1.1 The email account that you tried to reach does not "
                         "exist.", None) == 0
    assert capsys.readouterr().out == "invalid_recipient bounce gmail-no-such-account\n"
    assert classify_main("451 zzz", None) == 0
    assert capsys.readouterr().out == "other retry -\n"


def test_cli_with_operator_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert classify_main("450 4.2.1 mailbox gone", _config(tmp_path)) == 0
    assert capsys.readouterr().out == "invalid_recipient bounce example-gone\n"


def test_cli_rejects_what_is_not_a_failure_reply(capsys: pytest.CaptureFixture[str]) -> None:
    assert classify_main("hello", None) == 65
    assert classify_main("250 2.0.0 ok", None) == 65
    out = capsys.readouterr()
    assert out.out == "" and "mta bounce classify:" in out.err
