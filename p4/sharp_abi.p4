/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * sharp_abi.p4 - the part of the sharpctl ABI that the P4 switch needs.
 *
 * MIRRORS ebpf/include/sharp_abi.h, which is the one definition of the ABI:
 * every constant below carries the name and value of the enum constant there
 * (SHARP_*). Change sharp_abi.h first, then this file; nothing here may
 * differ from it. Only what the switch uses is mirrored (shim layout, phases,
 * handover id range, port roles, table and counter sizes).
 *
 * Bit widths: the P4 types are exactly as wide as the packet field (the tag
 * is phase:2 | hid:14), so a P4Runtime write of an out-of-range phase or hid
 * is rejected by the server instead of reaching the data plane.
 */
#ifndef SHARP_ABI_P4
#define SHARP_ABI_P4

/* ------------------------------------------------------------------------ */
/* Types                                                                    */
/* ------------------------------------------------------------------------ */

typedef bit<2>  sharp_phase_t;      /* enum sharp_phase                      */
typedef bit<14> sharp_hid_t;        /* handover id, SHARP_HID_MIN..MAX       */
typedef bit<16> sharp_ether_type_t;

/* ------------------------------------------------------------------------ */
/* Shim (enum sharp_shim_const, struct sharp_shim)                          */
/* ------------------------------------------------------------------------ */

/*
 *   dst(6) src(6) | 0x821C | tag(2) | inner EtherType(2) | payload...
 *   tag = phase << 14 | handover_id
 */
const sharp_ether_type_t SHARP_ETH_P_SHIM = 0x821C;
const bit<32> SHARP_SHIM_LEN = 4;
const bit<32> SHARP_ETH_HLEN = 14;
const bit<32> SHARP_ETH_SHIM_HLEN = 18;
const bit<32> SHARP_TAG_PHASE_SHIFT = 14;
const bit<16> SHARP_TAG_HID_MASK = 0x3FFF;
const sharp_hid_t SHARP_HID_MIN = 1;
const sharp_hid_t SHARP_HID_MAX = 16383;
const bit<32> SHARP_HID_COUNT = 16384;

/* struct sharp_shim: the 4 bytes after an Ethernet header of type
 * SHARP_ETH_P_SHIM. phase and hid together are the 16-bit tag, in the bit
 * positions sharp_tag_make() gives them. */
header sharp_shim_t {
    sharp_phase_t      phase;        /* tag bits 15..14 */
    sharp_hid_t        hid;          /* tag bits 13..0  */
    sharp_ether_type_t inner_proto;  /* original EtherType */
}

/* ------------------------------------------------------------------------ */
/* Phases (enum sharp_phase)                                                */
/* ------------------------------------------------------------------------ */

const sharp_phase_t SHARP_PHASE_NONE = 0;    /* not under handover: no shim */
const sharp_phase_t SHARP_PHASE_PRE = 1;     /* to the old instance, counted */
const sharp_phase_t SHARP_PHASE_POST = 2;    /* to the new instance, held there */
const sharp_phase_t SHARP_PHASE_DIVERT = 3;  /* baseline: to the controller */
/* In a shim on a link (never in an action): a frame the new instance's agent
 * sends back into the switch on a rollback, for the switch to relay to the
 * old instance (the relays table). Same value as DIVERT, as in the header. */
const sharp_phase_t SHARP_PHASE_RELAY = 3;

/* ------------------------------------------------------------------------ */
/* Switch (enum sharp_port_role, enum sharp_switch_limits)                  */
/* ------------------------------------------------------------------------ */

const bit<8> SHARP_PORT_HOST = 1;
const bit<8> SHARP_PORT_VNF = 2;

const bit<32> SHARP_MAX_WILD_RULES = 256;
const bit<32> SHARP_DEFAULT_MAX_PORTS = 64;
const bit<32> SHARP_DEFAULT_MAX_RULES = 4096;
const bit<32> SHARP_DEFAULT_MAX_RELAYS = 256;

#endif /* SHARP_ABI_P4 */
