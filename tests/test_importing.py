"""Bulk import parsing: every bad line reported with its line number, nothing half-accepted."""

from __future__ import annotations

from hosts.importing import parse_inventory

LEVELS = ["site", "room", "row", "rack"]
HEADER = "name,bmc_address,bmc_username,bmc_password,boot_mac,site,room,row,rack,key_erase\n"


def _csv(*lines: str) -> str:
    return HEADER + "\n".join(lines) + "\n"


def test_good_csv_gives_every_row_with_its_line():
    text = _csv(
        "node-1,ipmi://10.0.0.1,admin,pw-one,52:54:00:00:00:01,ams,a,1,r1,true",
        "node-2,redfish://10.0.0.2/redfish/v1/Systems/1,admin,pw-two,52:54:00:00:00:02,ams,a,1,r2,",
    )
    result = parse_inventory(text, "csv", levels=LEVELS)
    assert result.ok, result.errors
    assert [(r.line, r.name, r.key_erase) for r in result.rows] == [(2, "node-1", True), (3, "node-2", False)]
    assert result.rows[0].location == {"site": "ams", "room": "a", "row": "1", "rack": "r1"}
    assert "pw-one" not in repr(result.rows[0])


def test_every_bad_line_is_reported_and_nothing_is_accepted():
    text = _csv(
        "node-1,ipmi://10.0.0.1,admin,pw,52:54:00:00:00:01,ams,a,1,r1,",
        "Node_2,http://10.0.0.2,admin,pw,52:54:00:00:00:0Z,ams,,1,r1,maybe",
        "node-1,ipmi://10.0.0.3,admin,,52:54:00:00:00:01,ams,a,1,r3,",
    )
    result = parse_inventory(text, "csv", levels=LEVELS)
    assert result.rows == []
    messages = [str(e) for e in result.errors]
    assert any(m.startswith("line 3: name:") for m in messages)
    assert any(m.startswith("line 3: bmc_address:") and "not supported" in m for m in messages)
    assert any(m.startswith("line 3: boot_mac:") for m in messages)
    assert any(m.startswith("line 3: key_erase:") for m in messages)
    assert any(m.startswith("line 3: location:") and "room is not" in m for m in messages)
    assert "line 4: name: duplicate of line 2" in messages
    assert "line 4: boot_mac: duplicate of line 2" in messages
    assert "line 4: bmc_password: required" in messages
    assert "pw" not in " ".join(m for m in messages if "bmc_password" not in m).split()


def test_unknown_columns_and_extra_cells():
    text = "name,bmc_address,bmc_username,bmc_password,boot_mac,colour\nn1,ipmi://h,u,p,52:54:00:00:00:01,red,extra\n"
    messages = [str(e) for e in parse_inventory(text, "csv", levels=LEVELS).errors]
    assert any("colour: unknown column" in m for m in messages)
    assert any("more cells than columns" in m for m in messages)


def test_yaml_lines_point_at_each_host():
    text = """hosts:
  - name: node-1
    bmc_address: ipmi://10.0.0.1
    bmc_username: admin
    bmc_password: pw
    boot_mac: "52:54:00:00:00:01"
    site: ams
  - name: node-2
    bmc_address: 10.0.0.2
    bmc_username: admin
    bmc_password: pw
    boot_mac: "52:54:00:00:00:02"
"""
    result = parse_inventory(text, "yaml", levels=LEVELS)
    assert [str(e) for e in result.errors] == [
        "line 8: bmc_address: BMC address '10.0.0.2' has no scheme: use e.g. ipmi://10.0.0.5 or "
        "redfish://10.0.0.5/redfish/v1/Systems/1"
    ]


def test_unreadable_or_empty_files_are_clear():
    assert str(parse_inventory("hosts: [", "yaml", levels=LEVELS).errors[0]).startswith("line ")
    assert str(parse_inventory("", "csv", levels=LEVELS).errors[0]) == "file: the file has no hosts"
    assert "a list of hosts" in str(parse_inventory("name: x", "yaml", levels=LEVELS).errors[0])
