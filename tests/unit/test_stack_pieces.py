"""Pure parts of the local stack: port choice, broker config, Java version parsing, the CLI."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from fcl.cli import build_parser
from fcl.stack.common import StackError, choose_ports, log_tail, port_is_free
from fcl.stack.kafka import KafkaPorts, _java_major, server_properties
from fcl.stack.manager import LocalStack, kafka_state


def test_a_taken_port_is_replaced_by_a_free_one() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        assert not port_is_free(taken)
        chosen = choose_ports([taken, taken, None])
        assert taken not in chosen
        assert len(set(chosen)) == 3 and all(port_is_free(p) for p in chosen)


def test_a_free_preferred_port_is_kept() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert choose_ports([port]) == [port]


def test_server_properties_single_node_kraft(tmp_path: Path) -> None:
    props = dict(
        line.split("=", 1)
        for line in server_properties(tmp_path / "data", KafkaPorts(broker=4100, controller=4101)).splitlines()
    )
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:4101"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:4100,CONTROLLER://127.0.0.1:4101"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:4100"
    assert props["log.dirs"] == str((tmp_path / "data").resolve())
    assert props["offsets.topic.replication.factor"] == "1"


@pytest.mark.parametrize(
    ("text", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_392"', 8),
        ('openjdk version "21" 2023-09-19', 21),
    ],
)
def test_java_major(text: str, major: int) -> None:
    assert _java_major(text) == major


def test_log_tail_puts_errors_above_a_long_trace(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("[t] INFO ok\n[t] ERROR the real cause\n" + "\tat frame\n" * 100)
    tail = log_tail(log, lines=5)
    assert "the real cause" in tail and tail.count("at frame") == 5
    assert "no log" in log_tail(tmp_path / "missing.log")


@pytest.mark.parametrize("argv", [["--help"], ["stack", "--help"], ["migrate", "--help"]])
def test_every_command_has_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 0
    assert "usage: fcl" in capsys.readouterr().out


def test_a_new_checkout_at_a_reused_path_gets_its_own_database(tmp_path, monkeypatch) -> None:
    """As root the database lives outside the checkout; a clone made where a deleted one was must
    not inherit the old database (its artifacts left with the old checkout)."""
    import shutil

    from fcl.stack import postgres

    monkeypatch.setattr(postgres, "running_as_root", lambda: True)
    root = tmp_path / "checkout" / ".fcl" / "stack"
    first = postgres.server_home(root)
    assert postgres.server_home(root) == first  # stable for one checkout
    shutil.rmtree(tmp_path / "checkout")
    assert postgres.server_home(root) != first


def test_a_checkout_that_ran_its_stack_before_instance_ids_keeps_its_database(tmp_path, monkeypatch) -> None:
    from fcl.stack import postgres

    legacy = tmp_path / "var-tmp" / "fcl-old" / "postgres"
    legacy.mkdir(parents=True)
    monkeypatch.setattr(postgres, "running_as_root", lambda: True)
    monkeypatch.setattr(postgres, "_legacy_home", lambda root: legacy)
    root = tmp_path / "checkout" / ".fcl" / "stack"
    (root / "kafka").mkdir(parents=True)
    assert postgres.server_home(root) == legacy
    assert postgres.server_home(root) == legacy


def test_server_properties_of_a_three_node_cluster(tmp_path: Path) -> None:
    controllers = {1: 4101, 2: 4201, 3: 4301}
    props = dict(
        line.split("=", 1)
        for line in server_properties(
            tmp_path / "data", KafkaPorts(broker=4200, controller=4201), node_id=2, controllers=controllers
        ).splitlines()
    )
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:4101,2@127.0.0.1:4201,3@127.0.0.1:4301"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:4200,CONTROLLER://127.0.0.1:4201"
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor"):
        assert props[key] == "3"
    assert props["min.insync.replicas"] == props["transaction.state.log.min.isr"] == "2"


def test_a_stack_state_from_before_clusters_reads_as_one_node_and_a_new_count_is_refused(tmp_path: Path) -> None:
    old = {"kafka": {"pid": 7, "start_ticks": 9, "broker_port": 9092, "controller_port": 9093, "cluster_id": "c"}}
    assert kafka_state(old) == {
        "cluster_id": "c",
        "nodes": [{"node_id": 1, "pid": 7, "start_ticks": 9, "broker_port": 9092, "controller_port": 9093}],
    }
    (tmp_path / "stack").mkdir()
    (tmp_path / "stack" / "state.json").write_text(json.dumps(old))
    assert LocalStack(tmp_path).kafka_brokers == 1  # the stack keeps the count its data was formatted for
    with pytest.raises(StackError, match="formatted for 1 node"):
        LocalStack(tmp_path, kafka_brokers=3)


@pytest.mark.parametrize("count", [0, -1])
def test_a_cluster_of_no_node_is_refused(tmp_path: Path, count: int) -> None:
    with pytest.raises(StackError, match="at least 1"):
        LocalStack(tmp_path, kafka_brokers=count)
