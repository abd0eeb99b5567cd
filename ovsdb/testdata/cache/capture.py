#!/usr/bin/env python3
"""Captures real monitor notifications from an ovsdb-server for the cache tests.

Usage: capture.py unix:/path/db.sock update|update2|update3 > out.json

Starts a monitor (monitor / monitor_cond / monitor_cond_since) on a fresh NB database,
runs the transactions below one by one with ovsdb-client, and records for each the
notification(s) the server sent plus a `select` of every monitored table afterwards (the
state the cache must end up in). Regenerate the fixtures by hand:
  ovsdb-tool create db /usr/share/ovn/ovn-nb.ovsschema
  ovsdb-server --remote=punix:$PWD/s.sock db &
  ./capture.py unix:$PWD/s.sock update3 > nb-update3.json
(one fresh database per kind: the script expects an empty one). A standalone server
reports the all-zero transaction id in update3; a clustered one reports real ids.
"""
import json, socket, subprocess, sys

remote, kind = sys.argv[1], sys.argv[2]
DB = "OVN_Northbound"
# Load_Balancer monitors a column subset on purpose: the cache must ignore other columns.
TABLES = {
    "Logical_Switch": None,
    "Logical_Switch_Port": None,
    "Load_Balancer": ["name", "vips", "protocol", "external_ids", "options"],
}

sock = socket.socket(socket.AF_UNIX)
sock.connect(remote[len("unix:"):])
buf = ""
dec = json.JSONDecoder()
pending = []


def read_msg():
    global buf
    while True:
        s = buf.lstrip()
        if s:
            try:
                obj, end = dec.raw_decode(s)
                buf = s[end:]
                return obj
            except ValueError:
                pass
        data = sock.recv(65536)
        if not data:
            raise SystemExit("server closed")
        buf += data.decode()


def send(msg):
    sock.sendall(json.dumps(msg).encode())


def call(method, params, id_):
    send({"method": method, "params": params, "id": id_})
    while True:
        m = read_msg()
        if m.get("id") == id_:
            return m
        if m.get("method") == "echo":
            send({"result": m["params"], "error": None, "id": m["id"]})
        elif m.get("method"):
            pending.append(m)


def transact(ops):
    out = subprocess.run(["ovsdb-client", "transact", remote, json.dumps([DB] + ops)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def dump():
    res = transact([{"op": "select", "table": t, "where": [],
                     **({"columns": cols + ["_uuid"]} if cols else {})} for t, cols in TABLES.items()])
    out = {}
    for t, r in zip(TABLES, res):
        out[t] = {row["_uuid"][1]: {k: v for k, v in row.items() if k not in ("_uuid", "_version")}
                  for row in r["rows"]}
    return out


def reqs():
    return {t: ({"columns": c} if c else {}) for t, c in TABLES.items()}


def reqs_cond():
    return {t: [{"columns": c}] if c else [{}] for t, c in TABLES.items()}


# Something to find in the initial reply.
transact([{"op": "insert", "table": "Logical_Switch", "row": {
    "name": "pre", "other_config": ["map", [["a", "1"]]]}}])

if kind == "update":
    reply = call("monitor", [DB, "mon", reqs()], 1)
elif kind == "update2":
    reply = call("monitor_cond", [DB, "mon", reqs_cond()], 1)
else:
    reply = call("monitor_cond_since", [DB, "mon", reqs_cond(), "00000000-0000-0000-0000-000000000000"], 1)
assert reply.get("error") is None, reply

steps = [
    ("insert a switch with a port and a map", [
        {"op": "insert", "table": "Logical_Switch_Port", "row": {"name": "p1", "addresses": ["set", ["00:00:00:00:00:01 10.0.0.1"]]}, "uuid-name": "p1"},
        {"op": "insert", "table": "Logical_Switch", "row": {"name": "ls1", "ports": ["named-uuid", "p1"],
            "other_config": ["map", [["k1", "v1"], ["k2", "v2"]]], "external_ids": ["map", [["owner", "x"]]]}},
    ]),
    ("map: insert a key, delete a key, replace a value", [
        {"op": "mutate", "table": "Logical_Switch", "where": [["name", "==", "ls1"]], "mutations": [
            ["other_config", "delete", ["set", ["k1", "k2"]]],
            ["other_config", "insert", ["map", [["k2", "v2new"], ["k3", "v3"]]]]]},
    ]),
    ("set: add a port", [
        {"op": "insert", "table": "Logical_Switch_Port", "row": {"name": "p2"}, "uuid-name": "p2"},
        {"op": "mutate", "table": "Logical_Switch", "where": [["name", "==", "ls1"]], "mutations": [
            ["ports", "insert", ["set", [["named-uuid", "p2"]]]]]},
    ]),
    ("set: add and remove in one transaction", [
        {"op": "insert", "table": "Logical_Switch_Port", "row": {"name": "p3"}, "uuid-name": "p3"},
        {"op": "update", "table": "Logical_Switch", "where": [["name", "==", "ls1"]], "row": {
            "ports": ["set", [["named-uuid", "p3"]]]}},
    ]),
    ("scalar and optional columns", [
        {"op": "update", "table": "Logical_Switch_Port", "where": [["name", "==", "p3"]], "row": {
            "name": "p3-renamed", "enabled": True, "tag_request": 7, "type": "router"}},
    ]),
    ("optional column changes value and then is cleared", [
        {"op": "update", "table": "Logical_Switch_Port", "where": [["name", "==", "p3-renamed"]], "row": {"tag_request": 8}},
    ]),
    ("optional column cleared", [
        {"op": "update", "table": "Logical_Switch_Port", "where": [["name", "==", "p3-renamed"]], "row": {"tag_request": ["set", []], "enabled": ["set", []]}},
    ]),
    ("load balancer with vips and an unmonitored column", [
        {"op": "insert", "table": "Load_Balancer", "row": {"name": "lb1", "protocol": "tcp",
            "vips": ["map", [["10.96.0.1:80", "10.1.0.2:8080,10.1.0.3:8080"]]],
            "selection_fields": ["set", ["ip_src"]]}},
    ]),
    ("load balancer: protocol to udp, unmonitored column changes alone", [
        {"op": "update", "table": "Load_Balancer", "where": [["name", "==", "lb1"]], "row": {"protocol": "udp"}},
        {"op": "update", "table": "Load_Balancer", "where": [["name", "==", "lb1"]], "row": {"selection_fields": ["set", ["ip_dst"]]}},
    ]),
    ("map cleared entirely and set emptied", [
        {"op": "update", "table": "Logical_Switch", "where": [["name", "==", "ls1"]], "row": {
            "other_config": ["map", []], "ports": ["set", []]}},
    ]),
    ("delete rows", [
        {"op": "delete", "table": "Logical_Switch", "where": [["name", "==", "pre"]]},
        {"op": "delete", "table": "Load_Balancer", "where": []},
    ]),
]

out = {"kind": kind, "schema": "ovn-nb", "tables": TABLES, "initial": reply["result"],
       "initial_state": None, "steps": []}
# Initial state: the state before any step (the reply above).
out["initial_state"] = dump()
for i, (what, ops) in enumerate(steps):
    res = transact(ops)
    assert all("error" not in (r or {}) for r in res), (what, res)
    # ovsdb-server sends the update before the transact reply to the writer; to be sure it
    # reached us too, round-trip an echo on our own connection.
    call("echo", [], 100 + i)
    notes = [m for m in pending if m.get("method") in ("update", "update2", "update3")]
    pending.clear()
    out["steps"].append({"what": what, "ops": ops,
                         "notifications": [n["params"] for n in notes], "state": dump()})
json.dump(out, sys.stdout, indent=1, sort_keys=True)
print()
