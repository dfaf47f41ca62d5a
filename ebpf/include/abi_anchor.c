// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * abi_anchor.c - puts every sharp_abi.h struct and enum into BTF.
 *
 * Compiled with the same flags as the programs; never loaded. The TypeScript
 * codec generator reads `bpftool btf dump file abi_anchor.o format raw -j`.
 * An enum or struct only reaches BTF when something uses it, hence one
 * member per ABI type below. Add a member here for every new ABI type.
 */
#include "sharp_abi.h"

struct sharp_abi_anchor {
	/* enums */
	enum sharp_shim_const shim_const;
	enum sharp_phase phase;
	enum sharp_probe_const probe_const;
	enum sharp_port_role port_role;
	enum sharp_switch_limits switch_limits;
	enum sharp_agent_role agent_role;
	enum sharp_hold_state hold_state;
	enum sharp_agent_side agent_side;
	enum sharp_agent_limits agent_limits;
	enum sharp_finish_result finish_result;
	enum sharp_vnf_limits vnf_limits;
	enum sharp_replay_mode replay_mode;
	enum sharp_vnf_mode vnf_mode;
	enum sharp_tg_limits tg_limits;
	enum sharp_tg_check_limits tg_check_limits;
	/* structs */
	struct sharp_shim shim;
	struct sharp_eth_shim_hdr eth_shim_hdr;
	struct sharp_probe probe;
	struct sharp_flow_key flow_key;
	struct sharp_port_info port_info;
	struct sharp_wild_rule wild_rule;
	struct sharp_rule_action rule_action;
	struct sharp_exact_rule exact_rule;
	struct sharp_rule_stats rule_stats;
	struct sharp_port_stats port_stats;
	struct sharp_ho_stats ho_stats;
	struct sharp_agent_iface agent_iface;
	struct sharp_agent_ho agent_ho;
	struct sharp_slot slot;
	struct sharp_agent_stats agent_stats;
	struct sharp_refused_key refused_key;
	struct sharp_vnf_flow_state vnf_flow_state;
	struct sharp_vnf_stats vnf_stats;
	struct sharp_release_ctl release_ctl;
	struct sharp_mac mac;
	struct sharp_divert_record divert_record;
	struct sharp_divert_stats divert_stats;
	struct sharp_tg_config tg_config;
	struct sharp_tg_sink_config tg_sink_config;
	struct sharp_tg_flow_check tg_flow_check;
	struct sharp_tg_check_stats tg_check_stats;
	struct sharp_tg_event tg_event;
	struct sharp_tg_sink_stats tg_sink_stats;
	/* capture */
	enum sharp_capture_limits capture_limits;
	enum sharp_capture_program capture_program;
	enum sharp_capture_direction capture_direction;
	enum sharp_capture_verdict capture_verdict;
	enum sharp_capture_reason capture_reason;
	enum sharp_capture_filter capture_filter;
	struct sharp_capture_config capture_config;
	struct sharp_capture_hdr capture_hdr;
	struct sharp_capture_record capture_record;
	struct sharp_capture_stats capture_stats;
};

struct sharp_abi_anchor sharp_abi_anchor __attribute__((section(".abi"), used));
