-- SPDX-License-Identifier: Apache-2.0
--
-- sharp.lua - Wireshark/tshark dissector for sharpctl's frames:
--
--   * the SHarP shim (EtherType 0x821C, 4 bytes after the MAC addresses,
--     layout in ebpf/include/sharp_abi.h):
--         tag(2) = phase << 14 | handover id ; inner EtherType(2) ; payload
--     fields  sharp.tag  sharp.phase (PRE=1 POST=2 RELAY=3)  sharp.hid
--             sharp.inner_type
--     The payload goes to the ethertype table, so the inner IPv4/UDP is
--     dissected as usual (ip.src, udp.port, ... all work on marked frames).
--
--   * the test-traffic probe (UDP payload, big endian, struct sharp_probe):
--         magic(4) "SHRP" ; flow(4) ; seq(8) ; stamp(8) ; tx_ns(8)
--     fields  sharp.probe.magic  sharp.probe.flow  sharp.probe.seq
--             sharp.probe.stamp  sharp.probe.tx_ns
--     Found by a heuristic on every UDP payload that starts with the magic
--     (the generator's probes go to UDP port 9000 from 20000 + flow, but
--     tests use other ports); "Decode As..." on udp.port works too.
--
--   * sharpctl capture's per-packet metadata, when present in a pcapng
--     packet comment "sharp: program=... port=... verdict=..." is shown by
--     Wireshark itself as frame.comment (filter: frame.comment contains
--     "verdict=held").
--
-- Install:  sharpctl capture --install-dissector
--     or:   mkdir -p ~/.local/lib/wireshark/plugins && cp src/wireshark/sharp.lua ~/.local/lib/wireshark/plugins/
-- One-off:  tshark -X lua_script:src/wireshark/sharp.lua -r file.pcapng -Y 'sharp.phase == 2'
--
-- Keep the constants below in step with sharp_abi.h (test/wireshark checks
-- them against the generated ABI).

local SHARP_ETH_P_SHIM = 0x821C
local SHARP_SHIM_LEN = 4
local SHARP_TAG_PHASE_MASK = 0xC000
local SHARP_TAG_HID_MASK = 0x3FFF
local SHARP_PROBE_MAGIC = 0x53485250
local SHARP_PROBE_LEN = 32
local SHARP_PROBE_UDP_PORT = 9000

local phase_names = {
  [0] = "NONE (invalid in a shim)",
  [1] = "PRE",
  [2] = "POST",
  [3] = "RELAY",
}

-- ------------------------------------------------------------------ shim

local sharp = Proto("sharp", "SHarP handover shim")

local f_tag = ProtoField.uint16("sharp.tag", "Tag", base.HEX)
local f_phase = ProtoField.uint16("sharp.phase", "Phase", base.DEC, phase_names, SHARP_TAG_PHASE_MASK)
local f_hid = ProtoField.uint16("sharp.hid", "Handover id", base.DEC, nil, SHARP_TAG_HID_MASK)
local f_inner = ProtoField.uint16("sharp.inner_type", "Inner EtherType", base.HEX)
sharp.fields = { f_tag, f_phase, f_hid, f_inner }

local e_hid0 = ProtoExpert.new("sharp.hid_zero", "Handover id 0 is invalid", expert.group.MALFORMED, expert.severity.ERROR)
local e_phase0 = ProtoExpert.new("sharp.phase_none", "Phase NONE never appears in a shim", expert.group.MALFORMED, expert.severity.ERROR)
local e_short = ProtoExpert.new("sharp.short", "Shim cut short (fewer than 4 bytes)", expert.group.MALFORMED, expert.severity.ERROR)
sharp.experts = { e_hid0, e_phase0, e_short }

local ethertype_table = DissectorTable.get("ethertype")
local data_dissector = Dissector.get("data")

function sharp.dissector(tvb, pinfo, tree)
  local len = tvb:captured_len()
  local subtree = tree:add(sharp, tvb:range(0, math.min(len, SHARP_SHIM_LEN)))
  if len < SHARP_SHIM_LEN then
    subtree:add_proto_expert_info(e_short)
    return len
  end
  local tag = tvb:range(0, 2):uint()
  local phase = bit.rshift(tag, 14)
  local hid = bit.band(tag, SHARP_TAG_HID_MASK)
  local inner = tvb:range(2, 2):uint()

  subtree:add(f_tag, tvb:range(0, 2))
  local pi = subtree:add(f_phase, tvb:range(0, 2))
  local hi = subtree:add(f_hid, tvb:range(0, 2))
  subtree:add(f_inner, tvb:range(2, 2))
  if phase == 0 then pi:add_proto_expert_info(e_phase0) end
  if hid == 0 then hi:add_proto_expert_info(e_hid0) end

  local pname = phase_names[phase] or tostring(phase)
  subtree:append_text(string.format(", %s, handover %d, inner 0x%04x", pname, hid, inner))
  pinfo.cols.protocol:set("SHarP")
  pinfo.cols.info:prepend(string.format("[%s h%d] ", pname, hid))

  local rest = tvb:range(SHARP_SHIM_LEN):tvb()
  if len == SHARP_SHIM_LEN then return len end
  if not ethertype_table:try(inner, rest, pinfo, tree) then
    data_dissector:call(rest, pinfo, tree)
  end
  return len
end

ethertype_table:add(SHARP_ETH_P_SHIM, sharp)

-- ------------------------------------------------------------------ probe

local probe = Proto("sharp_probe", "SHarP test probe")

local p_magic = ProtoField.uint32("sharp.probe.magic", "Magic", base.HEX)
local p_flow = ProtoField.uint32("sharp.probe.flow", "Flow", base.DEC)
local p_seq = ProtoField.uint64("sharp.probe.seq", "Sequence", base.DEC)
local p_stamp = ProtoField.uint64("sharp.probe.stamp", "VNF stamp", base.DEC)
local p_tx = ProtoField.uint64("sharp.probe.tx_ns", "Sender timestamp (ns)", base.DEC)
local p_extra = ProtoField.bytes("sharp.probe.padding", "Padding")
probe.fields = { p_magic, p_flow, p_seq, p_stamp, p_tx, p_extra }

local function dissect_probe(tvb, pinfo, tree)
  local subtree = tree:add(probe, tvb:range(0, SHARP_PROBE_LEN))
  subtree:add(p_magic, tvb:range(0, 4))
  subtree:add(p_flow, tvb:range(4, 4))
  subtree:add(p_seq, tvb:range(8, 8))
  subtree:add(p_stamp, tvb:range(16, 8))
  subtree:add(p_tx, tvb:range(24, 8))
  if tvb:captured_len() > SHARP_PROBE_LEN then subtree:add(p_extra, tvb:range(SHARP_PROBE_LEN)) end
  local flow = tvb:range(4, 4):uint()
  local seq = tvb:range(8, 8):uint64()
  local stamp = tvb:range(16, 8):uint64()
  subtree:append_text(string.format(", flow %d, seq %s, stamp %s", flow, tostring(seq), tostring(stamp)))
  pinfo.cols.protocol:set("SHarP probe")
  pinfo.cols.info:append(string.format(" probe flow=%d seq=%s stamp=%s", flow, tostring(seq), tostring(stamp)))
  return tvb:captured_len()
end

local function is_probe(tvb)
  return tvb:captured_len() >= SHARP_PROBE_LEN and tvb:range(0, 4):uint() == SHARP_PROBE_MAGIC
end

function probe.dissector(tvb, pinfo, tree)
  if not is_probe(tvb) then return 0 end
  return dissect_probe(tvb, pinfo, tree)
end

local function heuristic(tvb, pinfo, tree)
  if not is_probe(tvb) then return false end
  dissect_probe(tvb, pinfo, tree)
  return true
end

probe:register_heuristic("udp", heuristic)
-- "Decode As" on any UDP port, and the generator's default destination port
DissectorTable.get("udp.port"):add_for_decode_as(probe)
DissectorTable.get("udp.port"):add(SHARP_PROBE_UDP_PORT, probe)
