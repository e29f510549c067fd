"""One person's devices from the command line, each command a separate process on 127.0.0.1:
``devices add`` on the phone (through its running ``serve``), ``link`` on the laptop and the
tablet (by link and by short code), both post and see each other's posts after restarts,
``devices`` lists them, a pairing used twice or mistyped is one error line, and the laptop
revokes the lost phone: Bob shows nothing the phone writes after that; a phone lost with no
other device is taken back by the words (``init --restore``, ``sync``), directly and through
the relay only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.test_cli import run
from tests.test_cli_network import free_port, invite_json, one_error_line, running, serving


def feed(home: str) -> list[str]:
    done = run("--home", home, "feed", "--json")
    assert done.returncode == 0, done.stderr
    return sorted(p["text"] for p in json.loads(done.stdout))


def devices(home: str) -> list[dict[str, object]]:
    done = run("--home", home, "devices", "--json")
    assert done.returncode == 0, done.stderr
    found: list[dict[str, object]] = json.loads(done.stdout)
    return found


def ok(*args: str) -> str:
    done = run(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_link_by_link_and_by_code_then_post_both_ways(tmp_path: Path) -> None:
    phone, laptop, tablet = (str(tmp_path / n) for n in ("phone", "laptop", "tablet"))
    port = free_port()
    ok("--home", phone, "init", "--name", "Alice phone")
    ok("--home", phone, "group", "create", "Family")
    ok("--home", phone, "post", "from the phone")
    with serving(phone, port):
        shown = json.loads(ok("--home", phone, "devices", "add", "--json"))
        linked = ok("--home", laptop, "link", shown["link"], "--name", "Alice laptop")
        assert "Linked Alice laptop" in linked and "Family" in linked
        one_error_line(
            run("--home", str(tmp_path / "again"), "link", shown["link"], "--name", "X"),
            "already used",
        )
        plain = ok("--home", phone, "devices", "add", "--no-qr")
        code = next(line.split()[1] for line in plain.splitlines() if line.startswith("code:"))
        assert "link: microsync:" in plain
        nameplate, *words = code.split("-")
        typo = "-".join([nameplate, *words[:-1], "abandon" if words[-1] != "abandon" else "able"])
        one_error_line(
            run("--home", tablet, "link", typo, "--at", f"127.0.0.1:{port}", "--name", "T"),
            "wrong code",
        )
        again = json.loads(ok("--home", phone, "devices", "add", "--json"))
        at = f"127.0.0.1:{port}"
        ok("--home", tablet, "link", again["code"], "--at", at, "--name", "Alice tablet")
        assert feed(laptop) == ["from the phone"] == feed(tablet)
        ok("--home", laptop, "post", "from the laptop")
        ok("--home", laptop, "sync", at)
        assert feed(phone) == ["from the laptop", "from the phone"]  # through serve
        ok("--home", tablet, "sync", at)
    # after a restart of everything: still there, on every device
    assert feed(tablet) == ["from the laptop", "from the phone"] == feed(phone)
    listed = devices(laptop)
    assert [(d["name"], d["this"], d["revoked"]) for d in listed] == [
        ("Alice laptop", True, False),
        ("Alice phone", False, False),
        ("Alice tablet", False, False),
    ]
    text = ok("--home", laptop, "devices")
    assert "this device" in text and "last seen" in text


def test_the_laptop_revokes_the_lost_phone(tmp_path: Path) -> None:
    phone, laptop, bob = (str(tmp_path / n) for n in ("phone", "laptop", "bob"))
    port, bob_port = free_port(), free_port()
    ok("--home", phone, "init", "--name", "Alice phone")
    ok("--home", bob, "init", "--name", "Bob")
    ok("--home", phone, "group", "create", "Family")
    invite = invite_json(phone, port)
    with serving(phone, port):
        ok("--home", bob, "join", invite["link"])
        shown = json.loads(ok("--home", phone, "devices", "add", "--json"))
        ok("--home", laptop, "link", shown["link"], "--name", "Alice laptop")
    lost = next(d for d in devices(laptop) if d["name"] == "Alice phone")
    one_error_line(run("--home", laptop, "devices", "revoke", "zz"), "matches none")
    revoked = ok("--home", laptop, "devices", "revoke", str(lost["id"])[:8])
    assert "Revoked Alice phone" in revoked
    with serving(bob, bob_port):
        at = f"127.0.0.1:{bob_port}"
        ok("--home", laptop, "post", "after the phone was lost")
        ok("--home", laptop, "sync", at)
        # the phone's copy comes back, posts and syncs: Bob shows nothing of it
        ok("--home", phone, "post", "written by whoever has the phone")
        run("--home", phone, "sync", at)  # it may be refused: what matters is what Bob shows
        assert feed(bob) == ["after the phone was lost"]
        # and the phone holds no words to restore from: whoever has it cannot get them
        one_error_line(run("--home", phone, "recovery-words"), "shown once")
    assert "after the phone was lost" not in feed(phone)
    assert [d["revoked"] for d in devices(laptop) if d["name"] == "Alice phone"] == [True]


def init_words(home: str, name: str) -> str:
    """``init`` a new person and return the 24 words it prints once."""
    created = ok("--home", home, "init", "--name", name)
    return next(line[7:] for line in created.splitlines() if line.startswith("words: "))


def phone_lost(tmp_path: Path, bob_port: int) -> tuple[str, str, str]:
    """Alice's phone (her only device, the only admin) and Bob in Family; the phone syncs
    with Bob, then its profile is copied aside (what a thief has) and deleted. Returns (the
    copy, bob, Alice's words, which ``init`` printed once)."""
    phone, bob = str(tmp_path / "phone"), str(tmp_path / "bob")
    port = free_port()
    words = init_words(phone, "Alice phone")
    ok("--home", bob, "init", "--name", "Bob")
    ok("--home", phone, "group", "create", "Family")
    ok("--home", phone, "post", "before the loss")
    invite = invite_json(phone, port)
    with serving(phone, port):
        ok("--home", bob, "join", invite["link"])
    with serving(bob, bob_port):
        ok("--home", phone, "sync", f"127.0.0.1:{bob_port}")
    copy = str(tmp_path / "phone copy")
    shutil.copytree(phone, copy)
    shutil.rmtree(phone)
    return copy, bob, words


def restore(tmp_path: Path, words: str) -> str:
    restored = str(tmp_path / "restored")
    done = run("--home", restored, "init", "--restore", "--name", "Alice again", stdin=words)
    assert done.returncode == 0 and "sync HOST:PORT" in done.stdout, done.stderr
    return restored


def test_the_lost_phone_restored_from_the_words(tmp_path: Path) -> None:
    """``init --restore`` with Alice's words, then ``sync`` with Bob's ``serve``, each a
    separate process: Family is back with its history, Alice is still its admin (she can
    invite), the recovery revoked the phone; the copy of the phone posts and syncs, and
    nobody shows its post; it reads nothing posted after the recovery."""
    bob_port = free_port()
    copy, bob, words = phone_lost(tmp_path, bob_port)
    restored = restore(tmp_path, words)
    at = f"127.0.0.1:{bob_port}"
    with serving(bob, bob_port):
        synced = ok("--home", restored, "sync", at)
        assert "Family" in synced
        assert feed(restored) == ["before the loss"]
        [lost] = [d for d in devices(restored) if d["name"] == "Alice phone"]
        assert lost["revoked"] is True
        one_error_line(
            run("--home", restored, "devices", "revoke", str(lost["id"])[:8]), "revoked already"
        )
        invite_json(restored, free_port())  # still the admin
        ok("--home", restored, "post", "I am back")
        ok("--home", restored, "sync", at)
        ok("--home", copy, "post", "written by whoever has the phone")
        run("--home", copy, "sync", at)  # it may be refused: what matters is what Bob shows
        ok("--home", restored, "sync", at)
    assert feed(bob) == ["I am back", "before the loss"]
    assert feed(restored) == ["I am back", "before the loss"]
    assert "I am back" not in feed(copy)


def test_restored_through_the_relay_only(tmp_path: Path) -> None:
    """The same with no address: Bob's ``serve --relay`` and the restored ``sync --relay``
    meet at a ``microsync relay``, under an id derived from Alice's person id."""
    _, bob, words = phone_lost(tmp_path, free_port())
    restored = restore(tmp_path, words)
    relay_port = free_port()
    url = f"ws://127.0.0.1:{relay_port}"
    relay_args = ("relay", "--host", "127.0.0.1", "--port", str(relay_port))
    with running(*relay_args, ready=url):
        bob_args = ("--home", bob, "serve", "--relay", url, "--no-lan", "--seconds", "60")
        with running(*bob_args, ready="online"):
            synced = ok("--home", restored, "sync", "--relay", url)
            assert "Family" in synced
            assert feed(restored) == ["before the loss"]
            ok("--home", restored, "post", "I am back")
            ok("--home", restored, "sync", "--relay", url)
    assert feed(bob) == ["I am back", "before the loss"]
