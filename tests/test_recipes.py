"""Recipe files (``--config FILE``): every shipped recipe is valid for its commands, flags
override a recipe, and a bad recipe is one error line before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybnn.cli import build_parser, parse
from hybnn.cli.recipes import tomllib

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.toml"))
COMMANDS = {"reproduce": [], "federate": [], "pretrain": [], "train": ["--out", "x"]}


def test_there_are_recipes():
    assert {p.name for p in CONFIGS} >= {"paper.toml", "bench-fashion.toml",
                                         "federated-skew.toml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_recipe_is_valid_for_its_commands(path):
    doc = tomllib.loads(path.read_text())
    tables = [name for name, value in doc.items() if isinstance(value, dict)]
    assert tables, f"{path.name} names the command it is for in a table"
    for command in tables:
        parser = build_parser()
        args = parse(parser, [command, *COMMANDS.get(command, []), "--config", str(path)])
        sub = next(a for a in parser._actions if a.choices and command in a.choices)
        actions = [a for a in sub.choices[command]._actions if a.option_strings]
        dest = {a.dest.split("__")[-1]: a.dest for a in actions}  # by field name
        dest.update({flag.lstrip("-").replace("-", "_"): a.dest
                     for a in actions for flag in a.option_strings})  # by flag
        for key, value in doc[command].items():
            got = vars(args)
            assert got[dest.get(key, key)] == value, (path.name, key)


def test_flags_override_the_recipe_and_the_recipe_fills_the_rest(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text("[train]\nepochs = 7\nlr = 0.5\nhidden = [16, 8]\nout = 'from-recipe'\n")
    args = parse(build_parser(), ["train", "--config", str(recipe), "--epochs", "3"])
    assert (args.epochs, args.lr, args.hidden, args.out) == (
        3, 0.5, [16, 8], "from-recipe")


@pytest.mark.parametrize(("text", "said"), [
    ("epoch = 3", "'epoch' is not a setting of hybnn train (did you mean epochs?)"),
    ("epochs = '3'", "epochs must be int"),
    ("hidden = 16", "hidden must be a non-empty list"),
    ("model = 'cnn'", "model must be one of head, bcnn, fpcnn"),
    ("resume = 1", "resume must be true or false"),
    ("epochs = [", "is not valid TOML"),
])
def test_a_bad_recipe_is_one_error_line(text, said, tmp_path, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text(text + "\n")
    with pytest.raises(SystemExit) as exc:
        parse(build_parser(), ["train", "--out", "x", "--config", str(recipe)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("hybnn: error: recipe ") and said in err and len(err.splitlines()) == 1


def test_a_missing_or_special_recipe_file_is_refused(tmp_path, capsys):
    for path in (tmp_path / "absent.toml", "/dev/zero"):
        with pytest.raises(SystemExit):
            parse(build_parser(), ["train", "--out", "x", "--config", str(path)])
        assert capsys.readouterr().err.startswith("hybnn: error: ")
