/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * sharp.p4 - the sharpctl switch for BMv2 (P4_16, v1model).
 *
 * Same semantics as the XDP switch (ebpf/switch.bpf.c); where BMv2 cannot do
 * what XDP does, the comment at that place says what happens instead.
 *
 *   - Classifies IPv4 frames into rules: an exact 5-tuple table first (an
 *     exact rule ALWAYS wins), then a ternary wildcard table ordered by
 *     P4Runtime priority (higher wins). A wildcard rule only yields a rule id;
 *     its action lives in rule_actions, shared by all micro-flows of the rule,
 *     so one table modify moves all of them at once (the XDP rule_actions map).
 *   - Forwards to the port behind an egress slot (tx_port, the XDP devmap).
 *   - Marks frames of a rule under handover with the shim (sharp_abi.p4):
 *     EtherType 0x821C, tag = phase << 14 | hid, original EtherType.
 *   - Counts per port, per rule, and PRE/POST per handover id (ho_pre is the
 *     protocol's pre_sent). Counters are read over P4Runtime.
 *   - Relays rollbacks: shim(RELAY, hid) arriving on a VNF port while the
 *     relays table has a route for hid is stripped and sent out of the
 *     route's slot (the port towards the old instance), counted as relayed.
 *   - Drops and counts every other shim frame arriving on a switch port (a
 *     shim from a host or a VNF is forged handover traffic), IPv4 frames
 *     without a rule, malformed frames and bad actions.
 *   - Counts, per egress slot, the frames a rule action sent towards it
 *     (sched_tx), inside the action: BMv2 runs an action under its table's
 *     read lock, so once a P4Runtime MODIFY of an action has returned, every
 *     frame that read the old action is in that count (the exact quiescence
 *     event; XDP gets it from a CPU barrier).
 *   - DIVERT (controller-buffer baseline): the frame goes to the controller
 *     as a P4Runtime packet-in; the controller sends frames out of a port with
 *     packet-out.
 *
 * Slots. As in XDP, the control plane names ports by slot: port_info maps an
 * ingress port to its slot and role, tx_port maps an egress slot to a port.
 * Counters are indexed by slot. (Slot == BMv2 port number is a valid choice.)
 *
 * Run simple_switch_grpc with --cpu-port 255 (CPU_PORT below).
 *
 * Layout of this file: headers, parser, checksum verification, ingress,
 * egress, checksum computation, deparser, switch.
 */
#include <core.p4>
#include <v1model.p4>

#include "sharp_abi.p4"

/* ======================================================================== */
/* Constants and types                                                      */
/* ======================================================================== */

typedef bit<9>  port_t;         /* BMv2 port number (v1model PortId_t) */
typedef bit<48> mac_addr_t;
typedef bit<16> ether_type_t;
typedef bit<32> ipv4_addr_t;
typedef bit<8>  ip_proto_t;
typedef bit<16> l4_port_t;
typedef bit<16> slot_t;         /* switch port slot, < SHARP_DEFAULT_MAX_PORTS */
typedef bit<8>  role_t;         /* enum sharp_port_role */
typedef bit<32> rule_id_t;
typedef bit<3>  fwd_t;          /* what ingress decided, for egress */

const port_t CPU_PORT = 255;

const ether_type_t ETHERTYPE_IPV4 = 0x0800;
const ip_proto_t IP_PROTO_TCP = 6;
const ip_proto_t IP_PROTO_UDP = 17;

const fwd_t FWD_NONE = 0;       /* dropped (or nothing decided) */
const fwd_t FWD_RULE = 1;       /* forwarded by a rule: counted in egress */
const fwd_t FWD_DIVERT = 2;     /* to the controller (DIVERT) */
const fwd_t FWD_PACKET_OUT = 3; /* sent by the controller */
const fwd_t FWD_RELAY = 4;      /* a rollback's frame, relayed to the old instance */

/* Size of the per-ingress-port counter of frames on ports not in port_info. */
const bit<32> BMV2_PORT_COUNT = 512;

/* sched_tx index: out_slot, or out_slot + SHARP_DEFAULT_MAX_PORTS (64 = 1 << 6)
 * for DIVERT (phase 3: the only phase with both bits set), without a branch. */
bit<32> sched_index(in slot_t out_slot, in sharp_phase_t phase) {
    return (bit<32>)out_slot + (((bit<32>)(phase & (phase >> 1))) << 6);
}

/* ======================================================================== */
/* Headers                                                                  */
/* ======================================================================== */

/* To the controller: frames of DIVERT rules. */
@controller_header("packet_in")
header packet_in_header_t {
    slot_t      in_slot;        /* ingress slot of the frame */
    bit<16>     hid;            /* the rule's handover id (bits 13..0) */
}

/* From the controller: a frame to send out of a slot as it is. */
@controller_header("packet_out")
header packet_out_header_t {
    slot_t      out_slot;
}

header ethernet_t {
    mac_addr_t   dst_addr;
    mac_addr_t   src_addr;
    ether_type_t ether_type;
}

header ipv4_t {
    bit<4>      version;
    bit<4>      ihl;
    bit<8>      diffserv;
    bit<16>     total_len;
    bit<16>     identification;
    bit<3>      flags;
    bit<13>     frag_offset;
    bit<8>      ttl;
    ip_proto_t  protocol;
    bit<16>     hdr_checksum;
    ipv4_addr_t src_addr;
    ipv4_addr_t dst_addr;
}

/* IPv4 options (ihl > 5): carried through unchanged. */
header ipv4_options_t {
    varbit<320> options;
}

/* The first 4 bytes of a TCP or UDP header: all the flow key needs, and all
 * the XDP switch requires to be present (struct sharp_l4_ports). */
header l4_ports_t {
    l4_port_t sport;
    l4_port_t dport;
}

struct headers_t {
    packet_in_header_t  packet_in;
    packet_out_header_t packet_out;
    ethernet_t          ethernet;
    sharp_shim_t        shim;       /* only ever added by this switch */
    ipv4_t              ipv4;
    ipv4_options_t      ipv4_options;
    l4_ports_t          l4_ports;
}

struct metadata_t {
    slot_t        in_slot;
    role_t        in_role;
    l4_port_t     sport;        /* flow key ports: 0 unless TCP/UDP first fragment */
    l4_port_t     dport;
    rule_id_t     rule_id;
    bool          has_action;
    slot_t        out_slot;
    sharp_hid_t   hid;
    sharp_phase_t phase;
    fwd_t         fwd;
}

error {
    IPv4BadVersion,
    IPv4BadIhl
}

/* ======================================================================== */
/* Parser                                                                   */
/* ======================================================================== */

parser SharpParser(packet_in pkt,
                   out headers_t hdr,
                   inout metadata_t meta,
                   inout standard_metadata_t std_meta) {

    state start {
        transition select(std_meta.ingress_port) {
            CPU_PORT: parse_packet_out;
            default: parse_ethernet;
        }
    }

    /* The frame after the packet-out header leaves as it is: not parsed. */
    state parse_packet_out {
        pkt.extract(hdr.packet_out);
        transition accept;
    }

    state parse_ethernet {
        pkt.extract(hdr.ethernet);
        transition select(hdr.ethernet.ether_type) {
            ETHERTYPE_IPV4: parse_ipv4;
            SHARP_ETH_P_SHIM: parse_shim;
            default: accept;    /* non-IPv4: ingress decides */
        }
    }

    /* A shim frame: the shim only (a relayed frame leaves with the rest as it
     * came). Too short for a shim: parser_error, dropped as forged. */
    state parse_shim {
        pkt.extract(hdr.shim);
        transition accept;
    }

    /* Like sharp_parse_ipv4(): version 4, ihl >= 5, all ihl*4 bytes present.
     * A failed check ends parsing with std_meta.parser_error set; ingress
     * drops such frames as malformed. */
    state parse_ipv4 {
        pkt.extract(hdr.ipv4);
        verify(hdr.ipv4.version == 4, error.IPv4BadVersion);
        verify(hdr.ipv4.ihl >= 5, error.IPv4BadIhl);
        transition select(hdr.ipv4.ihl) {
            5: parse_l4;
            default: parse_ipv4_options;
        }
    }

    state parse_ipv4_options {
        pkt.extract(hdr.ipv4_options, ((bit<32>)hdr.ipv4.ihl - 5) * 32);
        transition parse_l4;
    }

    /* Like sharp_flow_key_ipv4(): ports for TCP and UDP unless the frame is a
     * non-first fragment. */
    state parse_l4 {
        transition select(hdr.ipv4.frag_offset, hdr.ipv4.protocol) {
            (0, IP_PROTO_TCP): parse_l4_ports;
            (0, IP_PROTO_UDP): parse_l4_ports;
            default: accept;
        }
    }

    state parse_l4_ports {
        pkt.extract(hdr.l4_ports);
        transition accept;
    }
}

/* ======================================================================== */
/* Checksum verification                                                    */
/* ======================================================================== */

/* Nothing to verify: like the XDP switch, this switch does not check IPv4
 * header checksums, and it never changes the IPv4 header. */
control SharpVerifyChecksum(inout headers_t hdr, inout metadata_t meta) {
    apply { }
}

/* ======================================================================== */
/* Ingress                                                                  */
/* ======================================================================== */

control SharpIngress(inout headers_t hdr,
                     inout metadata_t meta,
                     inout standard_metadata_t std_meta) {

    /* ---- counters charged to the ingress slot (struct sharp_port_stats) -- */

    /* every frame received on a known port, bytes as received */
    counter(SHARP_DEFAULT_MAX_PORTS, CounterType.packets_and_bytes) port_rx;
    /* IPv4, no matching rule or no action for a wildcard rule */
    counter(SHARP_DEFAULT_MAX_PORTS, CounterType.packets) drop_no_rule;
    /* shim frame arrived on a switch port */
    counter(SHARP_DEFAULT_MAX_PORTS, CounterType.packets) drop_shim;
    /* non-IPv4 (ARP, ...): XDP passes these to the switch's own stack;
     * BMv2 has none, so they are dropped (this is pass_non_ip in XDP) */
    counter(SHARP_DEFAULT_MAX_PORTS, CounterType.packets) drop_non_ip;
    /* truncated Ethernet/IPv4/L4 header, bad version or ihl */
    counter(SHARP_DEFAULT_MAX_PORTS, CounterType.packets) drop_malformed;
    /* action with a phase but handover id 0 */
    counter(SHARP_DEFAULT_MAX_PORTS, CounterType.packets) drop_bad_action;
    /* action.out_slot (or a relay's slot) not in tx_port */
    counter(SHARP_DEFAULT_MAX_PORTS, CounterType.packets) drop_no_tx;
    /* shim(RELAY) frames from this VNF port, stripped and sent on by a
     * relays route */
    counter(SHARP_DEFAULT_MAX_PORTS, CounterType.packets) relayed;
    /* by egress slot: frames a rule action, a relay route or the controller
     * (packet-out) sent towards it (see the header); DIVERT actions count at
     * slot + SHARP_DEFAULT_MAX_PORTS (their frames go to the controller),
     * without a branch in the action */
    counter(2 * SHARP_DEFAULT_MAX_PORTS, CounterType.packets) sched_tx;
    /* frames on a BMv2 port that is not in port_info, by port number (XDP
     * passes these to the stack uncounted) */
    counter(BMV2_PORT_COUNT, CounterType.packets) drop_unknown_port;

    /* ---- actions ---------------------------------------------------------- */

    action drop() {
        mark_to_drop(std_meta);
        meta.fwd = FWD_NONE;
    }

    /* port_info */
    action set_port(slot_t slot, role_t role) {
        meta.in_slot = slot;
        meta.in_role = role;
    }

    action not_a_switch_port() {
        drop_unknown_port.count((bit<32>)std_meta.ingress_port);
        drop();
    }

    /* rules_exact: the action travels with the match (sharp_exact_rule). */
    action exact_rule(rule_id_t rule_id, slot_t out_slot,
                      sharp_hid_t hid, sharp_phase_t phase) {
        meta.rule_id = rule_id;
        meta.has_action = true;
        meta.out_slot = out_slot;
        meta.hid = hid;
        meta.phase = phase;
        sched_tx.count(sched_index(out_slot, phase));
    }

    /* rules_wild: only the rule id; the action is in rule_actions. */
    action wild_rule(rule_id_t rule_id) {
        meta.rule_id = rule_id;
    }

    /* rule_actions (sharp_rule_action) */
    action rule_action(slot_t out_slot, sharp_hid_t hid, sharp_phase_t phase) {
        meta.has_action = true;
        meta.out_slot = out_slot;
        meta.hid = hid;
        meta.phase = phase;
        sched_tx.count(sched_index(out_slot, phase));
    }

    /* relays: the route of a rollback's relayed frames (counted towards the
     * old instance like any other frame sent its way) */
    action relay_to(slot_t out_slot) {
        meta.out_slot = out_slot;
        sched_tx.count((bit<32>)out_slot);
    }

    /* tx_port (the devmap tx_ports) */
    action set_tx(port_t port) {
        std_meta.egress_spec = port;
    }

    /* ---- tables ----------------------------------------------------------- */

    /* ports: ingress port -> slot and role. role is informational for the
     * control plane, as in XDP: every switch port drops incoming shims. */
    table port_info {
        key = {
            std_meta.ingress_port : exact @name("port");
        }
        actions = {
            set_port;
            @defaultonly not_a_switch_port;
        }
        const default_action = not_a_switch_port();
        size = SHARP_DEFAULT_MAX_PORTS;
    }

    /* Exact 5-tuple rules. Always win over wildcard rules. */
    table rules_exact {
        key = {
            hdr.ipv4.src_addr : exact @name("saddr");
            hdr.ipv4.dst_addr : exact @name("daddr");
            hdr.ipv4.protocol : exact @name("proto");
            meta.sport        : exact @name("sport");
            meta.dport        : exact @name("dport");
        }
        actions = {
            exact_rule;
            @defaultonly NoAction;
        }
        const default_action = NoAction();
        size = SHARP_DEFAULT_MAX_RULES;
    }

    /* Wildcard rules: arbitrary masks on the addresses, ports and protocol
     * exact or wildcard (mask 0 = any, as 0 = any in XDP), ingress slot
     * exact or any. Among matching entries the highest P4Runtime priority
     * wins (XDP: first in the priority-sorted array). Two overlapping
     * entries of equal priority: which wins is unspecified - the control
     * plane gives every wildcard rule its own priority. (simple_switch_CLI
     * writes BMv2's native priorities, where the LOWER number wins; the
     * P4Runtime server inverts them.) */
    table rules_wild {
        key = {
            hdr.ipv4.src_addr : ternary @name("saddr");
            hdr.ipv4.dst_addr : ternary @name("daddr");
            hdr.ipv4.protocol : ternary @name("proto");
            meta.sport        : ternary @name("sport");
            meta.dport        : ternary @name("dport");
            meta.in_slot      : ternary @name("in_slot");
        }
        actions = {
            wild_rule;
            @defaultonly NoAction;
        }
        const default_action = NoAction();
        size = SHARP_MAX_WILD_RULES;
    }

    /* rule id -> action of a wildcard rule. One modify changes what all
     * micro-flows of the rule do. No entry: the frame is dropped. */
    table rule_actions {
        key = {
            meta.rule_id : exact @name("rule_id");
        }
        actions = {
            rule_action;
            @defaultonly NoAction;
        }
        const default_action = NoAction();
        size = SHARP_DEFAULT_MAX_RULES;
    }

    /* Rollback relay routes: hid -> out slot (the XDP relays map). Written
     * only while a rollback after switch-over relays B's held frames. */
    table relays {
        key = {
            hdr.shim.hid : exact @name("hid");
        }
        actions = {
            relay_to;
            @defaultonly NoAction;
        }
        const default_action = NoAction();
        size = SHARP_DEFAULT_MAX_RELAYS;
    }

    /* egress slot -> BMv2 port */
    table tx_port {
        key = {
            meta.out_slot : exact @name("slot");
        }
        actions = {
            set_tx;
            @defaultonly NoAction;
        }
        const default_action = NoAction();
        size = SHARP_DEFAULT_MAX_PORTS;
    }

    /* ---- the switch ------------------------------------------------------- */

    apply {
        meta.fwd = FWD_NONE;
        meta.has_action = false;

        if (std_meta.ingress_port == CPU_PORT) {
            /* From the controller: send the frame out of a slot, untouched. */
            if (!hdr.packet_out.isValid()) {
                drop();
                exit;
            }
            meta.out_slot = hdr.packet_out.out_slot;
            meta.phase = SHARP_PHASE_NONE;
            hdr.packet_out.setInvalid();
            meta.fwd = FWD_PACKET_OUT;
        } else {
            if (!port_info.apply().hit) {
                exit;   /* dropped and counted by not_a_switch_port */
            }
            port_rx.count((bit<32>)meta.in_slot);

            /* Same order of checks as sharp_switch(). */
            if (!hdr.ethernet.isValid()) {
                drop_malformed.count((bit<32>)meta.in_slot);
                drop();
                exit;
            }
            if (hdr.ethernet.ether_type == SHARP_ETH_P_SHIM) {
                /* forged unless shim(RELAY, hid) from a VNF port with a route */
                if (meta.in_role != SHARP_PORT_VNF || !hdr.shim.isValid() ||
                    hdr.shim.phase != SHARP_PHASE_RELAY || hdr.shim.hid < SHARP_HID_MIN) {
                    drop_shim.count((bit<32>)meta.in_slot);
                    drop();
                    exit;
                }
                if (!relays.apply().hit) {
                    drop_shim.count((bit<32>)meta.in_slot);
                    drop();
                    exit;
                }
                hdr.ethernet.ether_type = hdr.shim.inner_proto;
                hdr.shim.setInvalid();
                meta.phase = SHARP_PHASE_NONE;
                meta.fwd = FWD_RELAY;
            } else {
                if (hdr.ethernet.ether_type != ETHERTYPE_IPV4) {
                    drop_non_ip.count((bit<32>)meta.in_slot);
                    drop();
                    exit;
                }
                if (std_meta.parser_error != error.NoError) {
                    drop_malformed.count((bit<32>)meta.in_slot);
                    drop();
                    exit;
                }

                /* Flow key ports (0 when the frame has none). */
                if (hdr.l4_ports.isValid()) {
                    meta.sport = hdr.l4_ports.sport;
                    meta.dport = hdr.l4_ports.dport;
                } else {
                    meta.sport = 0;
                    meta.dport = 0;
                }

                /* Exact rules always win over wildcard rules. */
                if (!rules_exact.apply().hit) {
                    if (rules_wild.apply().hit) {
                        rule_actions.apply();
                    }
                }
                if (!meta.has_action) {
                    drop_no_rule.count((bit<32>)meta.in_slot);
                    drop();
                    exit;
                }

                /* Baseline (controller-buffer mode): the frame goes to the
                 * controller as it arrived, whatever the hid. */
                if (meta.phase == SHARP_PHASE_DIVERT) {
                    hdr.packet_in.setValid();
                    hdr.packet_in.in_slot = meta.in_slot;
                    hdr.packet_in.hid = (bit<16>)meta.hid;
                    std_meta.egress_spec = CPU_PORT;
                    meta.fwd = FWD_DIVERT;
                    exit;
                }

                /* phase > POST cannot be written (phase is 2 bits and 3 is
                 * DIVERT); hid > SHARP_HID_MAX cannot either (hid is 14 bits). */
                if (meta.phase != SHARP_PHASE_NONE && meta.hid < SHARP_HID_MIN) {
                    drop_bad_action.count((bit<32>)meta.in_slot);
                    drop();
                    exit;
                }
                meta.fwd = FWD_RULE;
            }
        }

        /* One tx_port lookup for rules and packet-out alike (BMv2 applies a
         * table at most once per pass). */
        if (!tx_port.apply().hit) {
            if (meta.fwd == FWD_RULE || meta.fwd == FWD_RELAY) {
                drop_no_tx.count((bit<32>)meta.in_slot);
            }
            drop();
            exit;
        }
        if (meta.fwd == FWD_RELAY) {
            relayed.count((bit<32>)meta.in_slot);
        } else if (meta.fwd == FWD_PACKET_OUT) {
            /* the baseline's flush, counted towards the instance it goes to
             * (here, once the slot is known to be a port) */
            sched_tx.count((bit<32>)meta.out_slot);
        }

        /* Insert shim(phase, hid) after the MAC addresses; the original
         * EtherType becomes the shim's inner_proto. */
        if (meta.phase != SHARP_PHASE_NONE) {
            hdr.shim.setValid();
            hdr.shim.phase = meta.phase;
            hdr.shim.hid = meta.hid;
            hdr.shim.inner_proto = hdr.ethernet.ether_type;
            hdr.ethernet.ether_type = SHARP_ETH_P_SHIM;
        }
    }
}

/* ======================================================================== */
/* Egress                                                                   */
/* ======================================================================== */

/*
 * Counting happens here, after the BMv2 egress queue: a frame the queue
 * drops (it drops when full) never reaches egress and is not counted. So
 * ho_pre counts exactly the PRE frames that left the switch - the pre_sent
 * the old instance must reach (XDP counts once bpf_redirect_map accepted the
 * frame).
 *
 * BMv2 counters count bytes as the frame was received (without the shim):
 * port_tx bytes of marked frames are 4 less than the XDP tx_bytes.
 */
control SharpEgress(inout headers_t hdr,
                    inout metadata_t meta,
                    inout standard_metadata_t std_meta) {

    /* frames forwarded by a rule, by egress slot */
    counter(SHARP_DEFAULT_MAX_PORTS, CounterType.packets_and_bytes) port_tx;
    /* frames that matched the rule and were sent (struct sharp_rule_stats);
     * rule ids >= SHARP_DEFAULT_MAX_RULES are forwarded but not counted */
    counter(SHARP_DEFAULT_MAX_RULES, CounterType.packets_and_bytes) rule_stats;
    /* marked frames sent, by handover id (struct sharp_ho_stats) */
    counter(SHARP_HID_COUNT, CounterType.packets) ho_pre;
    counter(SHARP_HID_COUNT, CounterType.packets) ho_post;
    /* frames sent to the controller (struct sharp_divert_stats), index 0 */
    counter(1, CounterType.packets_and_bytes) divert_stats;
    /* controller frames (packet-out) sent out of a port, index 0: the
     * controller knows its frames have left when this reaches their count */
    counter(1, CounterType.packets_and_bytes) packet_out_tx;

    apply {
        if (meta.fwd == FWD_RULE) {
            port_tx.count((bit<32>)meta.out_slot);
            if (meta.rule_id < SHARP_DEFAULT_MAX_RULES) {
                rule_stats.count(meta.rule_id);
            }
            if (meta.phase == SHARP_PHASE_PRE) {
                ho_pre.count((bit<32>)meta.hid);
            } else if (meta.phase == SHARP_PHASE_POST) {
                ho_post.count((bit<32>)meta.hid);
            }
        } else if (meta.fwd == FWD_RELAY) {
            port_tx.count((bit<32>)meta.out_slot);
        } else if (meta.fwd == FWD_DIVERT) {
            divert_stats.count(0);
        } else if (meta.fwd == FWD_PACKET_OUT) {
            packet_out_tx.count(0);
        }
    }
}

/* ======================================================================== */
/* Checksum computation                                                     */
/* ======================================================================== */

/* Nothing to compute: the IPv4 header is never changed (the shim sits
 * between Ethernet and IPv4). */
control SharpComputeChecksum(inout headers_t hdr, inout metadata_t meta) {
    apply { }
}

/* ======================================================================== */
/* Deparser                                                                 */
/* ======================================================================== */

control SharpDeparser(packet_out pkt, in headers_t hdr) {
    apply {
        pkt.emit(hdr.packet_in);    /* only on frames to the controller */
        pkt.emit(hdr.ethernet);
        pkt.emit(hdr.shim);         /* only on marked frames */
        pkt.emit(hdr.ipv4);
        pkt.emit(hdr.ipv4_options);
        pkt.emit(hdr.l4_ports);
    }
}

/* ======================================================================== */
/* Switch                                                                   */
/* ======================================================================== */

V1Switch(
    SharpParser(),
    SharpVerifyChecksum(),
    SharpIngress(),
    SharpEgress(),
    SharpComputeChecksum(),
    SharpDeparser()
) main;
