// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* hexlane's IPv4 service load balancer, for tc (clsact) hooks.
 *
 * One program per attach point (the translations themselves live in nat.h):
 * hl_from_netdev (ingress of the node's LAN interface, behind the masquerade's ingress program,
 *   which has already turned replies of masqueraded flows back to their pod): ARP requests
 *   for the IPs this node announces are answered (l2_responder.h); replies of
 *   translated flows are turned back (SNAT replies to the client, replies from remote
 *   backends to pods); a packet carrying the DSR option is accepted for a local backend (the
 *   option is recorded and stripped); a packet to a NodePort, LoadBalancer or external IP
 *   frontend (EXT scope) is translated: DNAT to a local backend, or for a backend on another
 *   node SNAT to the node address (loadBalancer.mode snat) or the DSR option (dsr; hybrid:
 *   TCP only), then sent out by the FIB. Anything else goes on (TC_ACT_UNSPEC).
 * hl_from_overlay (ingress of the VXLAN device in tunnel mode): the same replies and DSR
 *   packets, as they arrive from other nodes through the tunnel.
 * hl_from_pod (ingress of every pod's host-side veth): replies of translated flows (from a
 *   local backend) are turned back; a packet to any frontend (INT scope) is DNATed (and a pod
 *   reaching itself SNATed to HL_HAIRPIN_ADDR); both are sent on by the FIB.
 * hl_from_host (egress of hexlane_host, where the node routes the service CIDR): the node's
 *   own connections to a frontend are DNATed and redirected to the backend by the FIB.
 * hl_from_lo (egress of lo): the node's own connections to its own NodePorts.
 * hl_to_netdev / hl_to_overlay / hl_to_pod (egress of the LAN interface, the VXLAN device,
 *   every pod veth): replies that a host-network backend of this node sends from the node's
 *   own stack are turned back.
 * Each program is one struct hl_hook given to the shared body, hl_lb4_hook; what is not the
 * program's goes on to the next filter (TC_ACT_UNSPEC).
 *
 * A service without backends rejects the packet with ICMP port unreachable (icmp.h), counted
 * as HL_DROP_NO_BACKEND. Malformed or truncated packets are dropped and counted by reason.
 * Forwards and drops are counted by direction in hl_metrics (metrics.h): the pod veths' hooks
 * count every packet they hand on (out of a pod: EGRESS, into one: INGRESS), the others the
 * packets they translate or turn back and send on themselves (SERVICE).
 */
#include "common.h"
#include "hexlane_maps.h"
#include "metrics.h"
#include "drop.h"
#include "parse.h"
#include "csum.h"
#include "conntrack.h"
#include "lb.h"
#include "icmp.h"
#include "events.h"
#include "policy.h"
#include "nat.h"
#include "l2_responder.h"

/* What each attach point does (one program per attach point; the shared body is hl_lb4_hook). */
struct hl_hook {
	/* Replies of translated flows: HL_REPLIES_SEND turns them back and sends them on by the
	 * FIB, HL_REPLIES_PASS turns them back on their way out of a device (and only that).
	 */
	__u8 replies;
	/* Which packets to a frontend are translated here: none, those from inside the cluster
	 * (the INT scope, any frontend), or those from outside (the EXT scope, external
	 * frontends; SNAT or DSR for a backend on another node).
	 */
	__u8 frontends;
	bool dsr;     /* DSR packets for a local backend arrive here (from another node) */
	bool ingress; /* an ingress hook: only there may a packet go straight into a pod */
	/* The LAN device: ARP requests for the IPs this node announces are answered here, and
	 * frames for another host (a switch floods them while it does not know the MAC) are
	 * left to the kernel, which drops them: only the host they are for may translate.
	 */
	bool lan;
	/* Which packets this hook reports to Hubble (events.h) besides those it translates: */
	__u8 trace;
	__u8 dir; /* HL_DIR_*: the direction its forwards and drops are counted in */
	/* Network policy (policy.h) decided here: a pod's egress (the packets it sends), or
	 * its ingress (the packets going into it through its veth).
	 */
	__u8 policy;
};

#define HL_HOOK_POLICY_NONE    0
#define HL_HOOK_POLICY_EGRESS  1
#define HL_HOOK_POLICY_INGRESS 2

#define HL_TRACE_XLATED   0 /* only those it translates or turns back */
#define HL_TRACE_ALL      1 /* every packet (a pod's, leaving it) */
#define HL_TRACE_INBOUND  2 /* packets for this node's pods (entering the node) */
#define HL_TRACE_UNMARKED 3 /* packets no hook of this node has considered (into a pod) */

#define HL_REPLIES_NONE 0
#define HL_REPLIES_SEND 1
#define HL_REPLIES_PASS 2

#define HL_FRONTENDS_NONE     0
#define HL_FRONTENDS_INTERNAL 1
#define HL_FRONTENDS_EXTERNAL 2

/* A reply turned back by hl_lb4_reverse, sent where its (new) destination is: an SNAT
 * reply now goes to the client, a hairpin reply to the pod itself, any other to its pod.
 */
static __always_inline int hl_reply_redirect(struct __sk_buff *skb, const struct pkt4 *p,
					     const struct hl_hook *hook, const struct hl_trace *tr)
{
	__be32 daddr;

	if (bpf_skb_load_bytes(skb, IP_DADDR_OFF, &daddr, sizeof(daddr)) < 0)
		return hl_drop(skb, HL_DROP_TRUNCATED, hook->dir);
	return hl_fib_redirect(skb, daddr, p->proto, false, !hook->ingress, tr);
}

/* A drop: counted, and reported with what is known of the packet. */
static __always_inline int hl_drop_traced(struct __sk_buff *skb, const struct hl_hook *hook,
					  const struct hl_trace *tr, __u32 reason)
{
	hl_drop_report(skb, tr, reason);
	return hl_drop(skb, reason, hook->dir);
}

/* A packet the hook hands on to the kernel as it is: a forward where the hook counts every
 * packet (a pod veth's).
 */
static __always_inline int hl_pass(struct __sk_buff *skb, const struct hl_hook *hook)
{
	if (hook->dir != HL_DIR_SERVICE)
		hl_count_forward(skb, hook->dir);
	return TC_ACT_UNSPEC;
}

/* The hook's policy (a pod's egress or ingress) for a packet it hands on untranslated:
 * `sent` is its tuple, NULL to read it from the packet (changed since it was parsed).
 * 0, or -HL_DROP_POLICY.
 */
static __always_inline int hl_policy_check(struct __sk_buff *skb, const struct hl_hook *hook,
					   const struct hl_tuple *sent)
{
	struct hl_tuple t = {};

	if (hook->policy == HL_HOOK_POLICY_NONE)
		return 0;
	if (sent)
		t = *sent;
	else if (hl_tuple_from_skb(skb, &t) < 0)
		return 0;
	if (hook->policy == HL_HOOK_POLICY_EGRESS)
		return hl_policy_egress(skb, &t, t.daddr, t.dport);
	return hl_policy_ingress(skb, &t);
}

/* A packet the hook sends on itself (`verdict`: a redirect, or TC_ACT_OK), counted as its
 * forward; a drop was counted where it happened.
 */
static __always_inline int hl_sent(struct __sk_buff *skb, const struct hl_hook *hook,
				   int verdict)
{
	if (verdict != TC_ACT_SHOT)
		hl_count_forward(skb, hook->dir);
	return verdict;
}

/* A packet this hook hands on untranslated, reported as the hook's `trace` says. */
static __always_inline void hl_trace_pass(struct __sk_buff *skb, const struct hl_hook *hook,
					  const struct hl_trace *tr)
{
	const struct hl_trace_config *cfg;

	switch (hook->trace) {
	case HL_TRACE_ALL:
		hl_trace_report(skb, tr, 0);
		break;
	case HL_TRACE_INBOUND:
		cfg = hl_trace_on();
		if (cfg && cfg->pod_mask && (tr->daddr & cfg->pod_mask) == cfg->pod_net)
			hl_trace_report(skb, tr, HL_OBS_TO_ENDPOINT);
		break;
	case HL_TRACE_UNMARKED:
		if (!(skb->mark & HL_MARK_TRACED))
			hl_trace_report(skb, tr, HL_OBS_TO_ENDPOINT);
		break;
	default:
		break;
	}
}

/* A packet the parser passes on (not TCP/UDP, or a fragment): ICMP is reported too, with
 * the echo identifier standing for the ports as the masquerade takes it.
 */
static __always_inline void hl_trace_other(struct __sk_buff *skb, const struct hl_hook *hook)
{
	struct hl_icmp_echo icmp;
	struct hl_trace tr = {};
	struct iphdr ip4;

	if (hook->trace == HL_TRACE_XLATED || skb->protocol != bpf_htons(ETH_P_IP) ||
	    !hl_trace_on())
		return;
	if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr), &ip4, sizeof(ip4)) < 0 ||
	    ip4.version != 4 || ip4.protocol != IPPROTO_ICMP || (ip4.frag_off & bpf_htons(0x1fff)))
		return;
	if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr) + ip4.ihl * 4, &icmp, sizeof(icmp)) < 0)
		return;
	tr.saddr = ip4.saddr;
	tr.daddr = ip4.daddr;
	tr.proto = IPPROTO_ICMP;
	tr.flags = HL_EV_F_L4;
	tr.icmp_type = icmp.type;
	tr.icmp_code = icmp.code;
	if (icmp.type == HL_ICMP_ECHO)
		tr.sport = icmp.id;
	else if (icmp.type == HL_ICMP_ECHOREPLY)
		tr.dport = icmp.id;
	hl_trace_pass(skb, hook, &tr);
}

/* What a packet that could not be parsed shows: its addresses, when its IPv4 header is there. */
static __always_inline void hl_trace_unparsed(struct __sk_buff *skb, struct hl_trace *tr)
{
	struct iphdr ip4;

	if (skb->protocol == bpf_htons(ETH_P_IP) &&
	    bpf_skb_load_bytes(skb, sizeof(struct ethhdr), &ip4, sizeof(ip4)) == 0) {
		tr->saddr = ip4.saddr;
		tr->daddr = ip4.daddr;
	}
}

/* Every program's body: replies first, then DSR packets, then packets to a frontend. Returns
 * a tc verdict.
 */
static __always_inline int hl_lb4_hook(struct __sk_buff *skb, const struct hl_hook hook)
{
	const struct lb4_service *svc;
	struct lb4_key key = {};
	struct pkt4 p = {};
	struct hl_trace tr = {};
	struct hl_tuple sent;
	__be32 daddr = 0;
	__u32 len;
	int verdict = TC_ACT_OK;
	bool local = false;
	bool external = hook.frontends == HL_FRONTENDS_EXTERNAL;
	int ret;

	if (hook.lan) {
		if (skb->pkt_type == PACKET_OTHERHOST)
			return TC_ACT_UNSPEC;
		ret = hl_l2_respond(skb);
		if (ret >= 0)
			return ret;
	}
	ret = hl_parse_ipv4(skb, &p);
	if (ret == PARSE_PASS) {
		ret = hl_policy_check(skb, &hook, NULL);
		if (ret < 0) {
			hl_trace_unparsed(skb, &tr);
			return hl_drop_traced(skb, &hook, &tr, -ret);
		}
		hl_trace_other(skb, &hook);
		return hl_pass(skb, &hook);
	}
	if (ret < 0) {
		hl_trace_unparsed(skb, &tr);
		return hl_drop_traced(skb, &hook, &tr, -ret);
	}
	hl_trace_from_pkt(&tr, &p);
	hl_tuple_from_pkt(&sent, &p);

	if (hook.replies != HL_REPLIES_NONE) {
		ret = hl_lb4_reverse(skb, &p, &tr);
		if (ret < 0)
			return hl_drop_traced(skb, &hook, &tr, -ret);
		if (hook.replies == HL_REPLIES_PASS) {
			if (hl_policy_check(skb, &hook, ret > 0 ? NULL : &sent) < 0)
				return hl_drop_traced(skb, &hook, &tr, HL_DROP_POLICY);
			if (ret > 0 && hook.trace == HL_TRACE_UNMARKED)
				hl_trace_report(skb, &tr, HL_OBS_TO_ENDPOINT);
			else if (ret == 0)
				hl_trace_pass(skb, &hook, &tr);
			if (ret > 0 && hook.dir == HL_DIR_SERVICE)
				hl_count_forward(skb, HL_DIR_SERVICE); /* turned back */
			return hl_pass(skb, &hook);
		}
		/* By the FIB, not the kernel's forwarding: a NodePort reply now has the node's
		 * own address as source, which the input route check would reject. A hairpin
		 * reply's destination changed too: read it again.
		 */
		if (ret > 0) {
			/* a pod's reply as a backend: its connection's verdict, by the tuple it
			 * sent
			 */
			if (hook.policy == HL_HOOK_POLICY_EGRESS) {
				ret = hl_policy_egress(skb, &sent, sent.daddr, sent.dport);
				if (ret < 0)
					return hl_drop_traced(skb, &hook, &tr, -ret);
			}
			return hl_sent(skb, &hook, hl_reply_redirect(skb, &p, &hook, &tr));
		}
	}
	if (hook.dsr) {
		ret = hl_dsr_accept(skb, &p, &tr);
		if (ret < 0)
			return hl_drop_traced(skb, &hook, &tr, -ret);
		/* Straight into the backend's namespace: the client's address is kept, and when
		 * the client is this node itself the input route check would drop it (a local
		 * source).
		 */
		if (ret > 0)
			return hl_sent(skb, &hook,
				       hl_fib_redirect(skb, p.daddr, p.proto, true, false, &tr));
	}
	if (hook.frontends == HL_FRONTENDS_NONE) {
		hl_ct_forget_stale_reply(&p);
		if (hl_policy_check(skb, &hook, &sent) < 0)
			return hl_drop_traced(skb, &hook, &tr, HL_DROP_POLICY);
		hl_trace_pass(skb, &hook, &tr);
		return hl_pass(skb, &hook);
	}

	key.address = p.daddr;
	key.dport = p.dport;
	key.proto = p.proto;
	svc = hl_lb4_lookup_scoped(&key, hook.frontends == HL_FRONTENDS_INTERNAL);
	if (!svc || (external && !hl_lb4_is_external(svc))) {
		if (hook.replies != HL_REPLIES_NONE)
			hl_ct_forget_stale_reply(&p);
		if (hl_policy_check(skb, &hook, &sent) < 0)
			return hl_drop_traced(skb, &hook, &tr, HL_DROP_POLICY);
		hl_trace_pass(skb, &hook, &tr);
		return hl_pass(skb, &hook);
	}

	len = skb->len;
	ret = hl_lb4_translate(skb, &p, &key, svc, external, &daddr, &verdict, &local, &tr);
	if (ret < 0)
		return hl_drop_traced(skb, &hook, &tr, -ret);
	if (ret == HL_REJECTED) {
		/* turned into an ICMP error back to the client: the packet itself is dropped */
		hl_count_len(len, HL_DROP_NO_BACKEND, hook.dir);
		return verdict;
	}
	/* A pod's egress is decided on the backend it now goes to (tr: its address and port). */
	if (hook.policy == HL_HOOK_POLICY_EGRESS) {
		ret = hl_policy_egress(skb, &sent, daddr, tr.dport);
		if (ret < 0)
			return hl_drop_traced(skb, &hook, &tr, -ret);
	}
	return hl_sent(skb, &hook, hl_fib_redirect(skb, daddr, p.proto, hook.ingress && local,
						   !hook.ingress, &tr));
}

/* One program per attach point: its name, and what it does there (struct hl_hook). */
#define HL_PROGRAM(name, ...)							\
	SEC("tc") int name(struct __sk_buff *skb)				\
	{									\
		return hl_lb4_hook(skb, (struct hl_hook){ __VA_ARGS__ });	\
	}

HL_PROGRAM(hl_from_netdev, .replies = HL_REPLIES_SEND, .dsr = true,
	   .frontends = HL_FRONTENDS_EXTERNAL, .ingress = true, .lan = true,
	   .trace = HL_TRACE_INBOUND, .dir = HL_DIR_SERVICE)

/* Ingress of the tunnel device (routingMode: tunnel): pod traffic between nodes arrives
 * here decapsulated, so replies to flows a pod or the node sent to a backend on another node
 * are turned back here, and DSR packets for a local backend come this way too.
 */
HL_PROGRAM(hl_from_overlay, .replies = HL_REPLIES_SEND, .dsr = true,
	   .frontends = HL_FRONTENDS_NONE, .ingress = true, .trace = HL_TRACE_INBOUND,
	   .dir = HL_DIR_SERVICE)

HL_PROGRAM(hl_from_pod, .replies = HL_REPLIES_SEND, .frontends = HL_FRONTENDS_INTERNAL,
	   .ingress = true, .trace = HL_TRACE_ALL, .dir = HL_DIR_EGRESS,
	   .policy = HL_HOOK_POLICY_EGRESS)

HL_PROGRAM(hl_from_host, .replies = HL_REPLIES_NONE, .frontends = HL_FRONTENDS_INTERNAL,
	   .dir = HL_DIR_SERVICE)

/* Egress of the loopback device, which every packet of the node to one of its own addresses
 * takes: its connections to its own NodePorts are translated here (DNAT, then the FIB), and
 * replies that reach such a connection through the loopback (from a host-network backend of
 * this node) are turned back.
 */
HL_PROGRAM(hl_from_lo, .replies = HL_REPLIES_SEND, .frontends = HL_FRONTENDS_INTERNAL,
	   .dir = HL_DIR_SERVICE)

/* Egress of the LAN interface: a reply of a host-network backend of this node (its socket
 * answers from the node's own stack) to a client outside, before it leaves (and before the
 * masquerade behind it).
 */
HL_PROGRAM(hl_to_netdev, .replies = HL_REPLIES_PASS, .dir = HL_DIR_SERVICE)

/* Egress of the VXLAN device: the same replies, to a pod on another node (tunnel mode). */
HL_PROGRAM(hl_to_overlay, .replies = HL_REPLIES_PASS, .dir = HL_DIR_SERVICE)

/* Egress of every pod's host-side veth: a reply of a host-network backend of this node to
 * a pod of this node (replies from elsewhere were turned back where they came in).
 */
HL_PROGRAM(hl_to_pod, .replies = HL_REPLIES_PASS, .trace = HL_TRACE_UNMARKED,
	   .dir = HL_DIR_INGRESS, .policy = HL_HOOK_POLICY_INGRESS)

char _license[] SEC("license") = "Dual BSD/GPL";
