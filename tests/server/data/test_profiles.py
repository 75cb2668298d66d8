"""`pocketrank import users`: users' attributes for cold-start segments, bad rows named by line."""

from click.testing import CliRunner

from pocketrank.cli import main
from pocketrank.server.home import Home


def test_users_are_imported_and_bad_rows_named(tmp_path):
    home = tmp_path / "home"
    Home(home)
    users = tmp_path / "users.csv"
    users.write_text("customer,age_band,plan\nu1,18-24,gold\nu2,bad value!,x\nu 3,a,b\nu4,,silver\n")
    result = CliRunner().invoke(main, ["import", "users", str(users), "--home", str(home),
                                       "--map", "user_id=customer"])
    assert result.exit_code == 0, result.output
    assert "line 3: age_band" in result.output and "line 4: user_id" in result.output
    profiles = Home(home).store().profiles()
    assert profiles == {"u1": {"age_band": "18-24", "plan": "gold"}, "u4": {"plan": "silver"}}
    # Again with a change: the file's attributes replace the stored ones.
    users.write_text("customer,age_band\nu1,25-34\n")
    CliRunner().invoke(main, ["import", "users", str(users), "--home", str(home), "--map", "user_id=customer"])
    assert Home(home).store().profiles()["u1"] == {"age_band": "25-34"}


def test_a_file_without_user_ids_is_one_clear_error(tmp_path):
    home = tmp_path / "home"
    Home(home)
    users = tmp_path / "users.csv"
    users.write_text("customer,age_band\nu1,18-24\n")
    result = CliRunner().invoke(main, ["import", "users", str(users), "--home", str(home)])
    assert result.exit_code == 1 and "no user_id column" in result.output and "Traceback" not in result.output
