/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Network policy enforcement: the ipcache, the enforced endpoints, the policy map.
 *
 * hl_ipcache (LPM trie, Cilium's cilium_ipcache): IPv4 prefix -> security identity. The agent
 *   keeps every pod's /32, every node's, the policies' CIDR prefixes and 0.0.0.0/0 (world).
 * hl_endpoints (hash, a part of Cilium's cilium_lxc): a pod address of this node -> its
 *   identity and which directions are enforced. Only enforced endpoints are there: a packet of
 *   any other pod costs one lookup that misses.
 * hl_policy (LPM trie, Cilium's cilium_policy_<ep> maps in one, keyed by the endpoint's
 *   address first): {endpoint, remote identity, direction, protocol, port} -> allow (or deny,
 *   flags). The prefix length always covers endpoint, identity and direction (72 bits); less
 *   for any protocol (0) and for a port prefix (a range, or any port). Two lookups, with the
 *   remote identity and with identity 0 (any), find the most specific entry
 *   (hexlane.policy.maps.lookup is the same lookup in Python).
 *
 * A connection's first packet is decided; the verdict is kept in the load balancer's conntrack
 * map (hl_ct4) as a CT_F_POLICY entry keyed {endpoint, remote, endpoint's port, remote's port,
 * protocol}, the same key for both directions, so the rest of the connection and its replies
 * pass: an endpoint's egress is decided after service translation (on the backend and its
 * port) but keyed by the tuple as the pod sent it, which its replies come back reverse
 * translated to; ingress is decided on the packet as it enters the pod. A pod reaching itself
 * through a service (hairpin: its source is HL_HAIRPIN_ADDR) is not checked, as Cilium skips
 * policy for hairpin flows. ICMP is decided on its type (keyed as the port, as Cilium keys
 * `icmps` rules), other protocols on port 0; fragments after the first count as port 0 too
 * (no fragment tracking yet).
 */
#ifndef HEXLANE_POLICY_H
#define HEXLANE_POLICY_H

#include "common.h"
#include "hexlane_maps.h"
#include "conntrack.h"
#include "metrics.h"
#include "drop.h"
#include "events.h"

#ifndef POLICY_MAP_MAX_ENTRIES
#define POLICY_MAP_MAX_ENTRIES 65536
#endif
#ifndef IPCACHE_MAP_MAX_ENTRIES
#define IPCACHE_MAP_MAX_ENTRIES 65536
#endif

#define HL_POLICY_INGRESS 0 /* Cilium's trafficDirection: ingress 0, egress 1 */
#define HL_POLICY_EGRESS  1

#define HL_EP_F_INGRESS 1 /* hl_endpoint.flags: ingress enforced */
#define HL_EP_F_EGRESS  2 /* egress enforced */
#define HL_EP_F_AUDIT   4 /* policyAuditMode: a denied connection passes, audited */

#define HL_POLICY_F_DENY 1 /* hl_policy_entry.flags: a deny entry (part 2) */

#define HL_WORLD_ID 2

/* the bits of hl_policy_key after prefixlen that every entry covers: ep, identity, direction */
#define HL_POLICY_PREFIX_BASE 72
#define HL_POLICY_PREFIX_FULL 96

struct hl_ipcache_key {
	__u32 prefixlen;
	__be32 addr;
};

struct hl_ipcache_entry {
	__u32 identity;
	__u32 pad;
};

struct hl_endpoint {
	__u32 identity;
	__u8 flags; /* HL_EP_F_* */
	__u8 pad[3];
};

struct hl_policy_key {
	__u32 prefixlen;
	__be32 ep_addr;
	__u32 identity;  /* the remote side's; 0: any */
	__u8 direction;  /* HL_POLICY_* */
	__u8 proto;      /* 0: any (and any port) */
	__be16 dport;    /* the endpoint's port (ingress) or the remote's (egress); 0: any */
};

struct hl_policy_entry {
	__u8 flags; /* HL_POLICY_F_* */
	__u8 match; /* Cilium's policy match type of a hit on this entry (L3-Only, L3-L4, ...) */
	__u8 pad[2];
	__u32 cookie; /* the agent's number for the policies the entry comes from */
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct hl_ipcache_key);
	__type(value, struct hl_ipcache_entry);
	__uint(max_entries, IPCACHE_MAP_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hl_ipcache SEC(".maps");

HL_PINNED_MAP(BPF_MAP_TYPE_HASH, __be32, struct hl_endpoint,
	      IPCACHE_MAP_MAX_ENTRIES, BPF_F_NO_PREALLOC) hl_endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct hl_policy_key);
	__type(value, struct hl_policy_entry);
	__uint(max_entries, POLICY_MAP_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hl_policy SEC(".maps");

/* A packet's tuple as policy sees it: ports 0 where the protocol has none. */
struct hl_tuple {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 tcp_flags;
	__u8 icmp_type; /* ICMP: the type, which policy keys as the port (conntrack: ports 0) */
	__u8 pad;
};

static __always_inline void hl_tuple_from_pkt(struct hl_tuple *t, const struct pkt4 *p)
{
	t->saddr = p->saddr;
	t->daddr = p->daddr;
	t->sport = p->sport;
	t->dport = p->dport;
	t->proto = p->proto;
	t->tcp_flags = p->tcp_flags;
	t->icmp_type = 0;
	t->pad = 0;
}

/* The tuple of the packet as it is now (after any translation). -1: not IPv4. */
static __always_inline int hl_tuple_from_skb(struct __sk_buff *skb, struct hl_tuple *t)
{
	struct iphdr ip4;
	__u8 l4[14];

	if (skb->protocol != bpf_htons(ETH_P_IP) ||
	    bpf_skb_load_bytes(skb, sizeof(struct ethhdr), &ip4, sizeof(ip4)) < 0 ||
	    ip4.version != 4)
		return -1;
	t->saddr = ip4.saddr;
	t->daddr = ip4.daddr;
	t->sport = 0;
	t->dport = 0;
	t->proto = ip4.protocol;
	t->tcp_flags = 0;
	t->icmp_type = 0;
	t->pad = 0;
	if (ip4.frag_off & bpf_htons(0x1fff))
		return 0; /* a later fragment: no ports */
	if (ip4.protocol == IPPROTO_ICMP) {
		/* An echo's identifier stands for a port in conntrack, as in the masquerade: the
		 * source port of a request, the destination port of its reply.
		 */
		if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr) + ip4.ihl * 4, l4, 6) < 0)
			return 0;
		t->icmp_type = l4[0];
		if (l4[0] == 8)
			__builtin_memcpy(&t->sport, &l4[4], 2);
		else if (l4[0] == 0)
			__builtin_memcpy(&t->dport, &l4[4], 2);
		return 0;
	}
	if (ip4.protocol == IPPROTO_TCP) {
		if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr) + ip4.ihl * 4, l4, 14) < 0)
			return 0;
		t->tcp_flags = l4[13];
	} else if (ip4.protocol == IPPROTO_UDP) {
		if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr) + ip4.ihl * 4, l4, 4) < 0)
			return 0;
	} else {
		return 0;
	}
	__builtin_memcpy(&t->sport, &l4[0], 2);
	__builtin_memcpy(&t->dport, &l4[2], 2);
	return 0;
}

static __always_inline __u32 hl_ipcache_identity(__be32 addr)
{
	struct hl_ipcache_key key = { .prefixlen = 32, .addr = addr };
	const struct hl_ipcache_entry *e = bpf_map_lookup_elem(&hl_ipcache, &key);

	return e ? e->identity : HL_WORLD_ID;
}

/* The port a policy entry is keyed by: the destination port, an ICMP message's type. */
static __always_inline __be16 hl_policy_port(const struct hl_tuple *t, __be16 dport)
{
	return t->proto == IPPROTO_ICMP ? bpf_htons(t->icmp_type) : dport;
}

/* The entry deciding a new connection of endpoint `ep` with `identity` on `port`/`proto` in
 * `direction`: the most specific entry with the identity, else with identity 0; NULL: none
 * (denied by default).
 */
static __always_inline const struct hl_policy_entry *
hl_policy_lookup(__be32 ep, __u32 identity, __u8 direction, __u8 proto, __be16 port)
{
	struct hl_policy_key key = {
		.prefixlen = HL_POLICY_PREFIX_FULL,
		.ep_addr = ep,
		.identity = identity,
		.direction = direction,
		.proto = proto,
		.dport = port,
	};
	const struct hl_policy_entry *e = bpf_map_lookup_elem(&hl_policy, &key);

	if (!e) {
		key.identity = 0;
		e = bpf_map_lookup_elem(&hl_policy, &key);
	}
	return e;
}

/* A policy verdict for Hubble (Cilium's policy verdict notification): the connection's first
 * packet as policy saw it (`t`'s source, `daddr`:`dport`), the direction, what matched, the
 * remote identity and the deciding policies' number; `allowed`, else denied or `audited`.
 */
static __always_inline void hl_verdict_report(struct __sk_buff *skb, const struct hl_tuple *t,
					      __be32 daddr, __be16 dport, __u8 direction,
					      const struct hl_policy_entry *e, __u32 identity,
					      bool allowed, bool audited)
{
	struct hl_event ev = {};

	if (!hl_trace_on())
		return;
	ev.ktime_ns = bpf_ktime_get_ns();
	ev.type = HL_EVENT_POLICY_VERDICT;
	ev.obs_point = (direction == HL_POLICY_EGRESS ? HL_VERDICT_F_EGRESS : HL_VERDICT_F_INGRESS) |
		       ((e ? e->match : 0) << HL_VERDICT_MATCH_SHIFT) |
		       (audited ? HL_VERDICT_F_AUDITED : 0);
	ev.reason = allowed || audited ? 0 : HL_DROP_POLICY;
	ev.tcp_flags = t->tcp_flags;
	ev.proto = t->proto;
	ev.flags = (t->proto == IPPROTO_TCP || t->proto == IPPROTO_UDP ||
		    t->proto == IPPROTO_ICMP) ? HL_EV_F_L4 : 0;
	ev.icmp_type = t->icmp_type;
	ev.ifindex = skb->ifindex;
	ev.len = skb->len;
	ev.saddr = t->saddr;
	ev.daddr = daddr;
	ev.sport = t->proto == IPPROTO_ICMP ? 0 : t->sport;
	ev.dport = t->proto == IPPROTO_ICMP ? 0 : dport;
	ev.identity = identity;
	ev.cookie = e ? e->cookie : 0;
	hl_event_emit(&ev);
}

/* The verdict on a new connection of endpoint `ep` (its hl_endpoints entry) in `direction`
 * with the remote `identity`: 0 to let it pass (allowed, or audited), else -HL_DROP_POLICY;
 * reported either way.
 */
static __always_inline int hl_policy_decide(struct __sk_buff *skb, const struct hl_endpoint *ep,
					    __be32 ep_addr, __u32 identity, __u8 direction,
					    const struct hl_tuple *t, __be32 daddr, __be16 dport)
{
	const struct hl_policy_entry *e = hl_policy_lookup(ep_addr, identity, direction, t->proto,
							   hl_policy_port(t, dport));
	bool allowed = e && !(e->flags & HL_POLICY_F_DENY);
	bool audited = !allowed && (ep->flags & HL_EP_F_AUDIT);

	hl_verdict_report(skb, t, daddr, dport, direction, e, identity, allowed, audited);
	return allowed || audited ? 0 : -HL_DROP_POLICY;
}

/* The CT_F_POLICY key of endpoint `ep`'s connection with `remote`. */
static __always_inline void hl_policy_ct_key(struct ct4_key *key, __be32 ep, __be32 remote,
					     __be16 ep_port, __be16 remote_port, __u8 proto)
{
	hl_ct_key(key, ep, remote, ep_port, remote_port, proto, CT_F_POLICY);
}

/* An established (or replying) connection of the endpoint: touched, and true. */
static __always_inline bool hl_policy_ct_hit(const struct ct4_key *key, const struct hl_tuple *t)
{
	struct ct4_entry *entry = bpf_map_lookup_elem(&hl_ct4, key);

	if (!entry)
		return false;
	/* A new connection on the tuple of a closed one is decided again (Cilium's reopened
	 * state): the policy may have changed since.
	 */
	if ((t->tcp_flags & (HL_TCP_SYN | HL_TCP_ACK)) == HL_TCP_SYN &&
	    (entry->flags & CT_ENTRY_F_CLOSING))
		return false;
	if (t->tcp_flags & (HL_TCP_FIN | HL_TCP_RST))
		entry->flags |= CT_ENTRY_F_CLOSING;
	entry->last_seen_ns = bpf_ktime_get_ns();
	return true;
}

static __always_inline void hl_policy_ct_create(const struct ct4_key *key)
{
	struct ct4_entry entry = { .last_seen_ns = bpf_ktime_get_ns(), .packets = 1 };

	/* a full map costs only the memory of this verdict: the next packet is decided again */
	bpf_map_update_elem(&hl_ct4, key, &entry, BPF_ANY);
}

/* Egress of a pod: `sent` is the tuple as the pod sent it (the conntrack key), `daddr` and
 * `dport` where it goes after service translation (what policy decides on). 0 or
 * -HL_DROP_POLICY.
 */
static __always_inline int hl_policy_egress(struct __sk_buff *skb, const struct hl_tuple *sent,
					    __be32 daddr, __be16 dport)
{
	const struct hl_endpoint *ep = bpf_map_lookup_elem(&hl_endpoints, &sent->saddr);
	struct ct4_key key;

	if (!ep || !ep->flags)
		return 0;
	hl_policy_ct_key(&key, sent->saddr, sent->daddr, sent->sport, sent->dport, sent->proto);
	if (hl_policy_ct_hit(&key, sent))
		return 0;
	if ((ep->flags & HL_EP_F_EGRESS) && daddr != sent->saddr &&
	    hl_policy_decide(skb, ep, sent->saddr, hl_ipcache_identity(daddr), HL_POLICY_EGRESS,
			     sent, daddr, dport) < 0)
		return -HL_DROP_POLICY;
	hl_policy_ct_create(&key);
	return 0;
}

/* Ingress of a pod: the packet as it enters the pod. 0 or -HL_DROP_POLICY. */
static __always_inline int hl_policy_ingress(struct __sk_buff *skb, const struct hl_tuple *t)
{
	const struct hl_endpoint *ep = bpf_map_lookup_elem(&hl_endpoints, &t->daddr);
	struct ct4_key key;

	if (!ep || !ep->flags || t->saddr == HL_HAIRPIN_ADDR)
		return 0;
	hl_policy_ct_key(&key, t->daddr, t->saddr, t->dport, t->sport, t->proto);
	if (hl_policy_ct_hit(&key, t))
		return 0;
	if ((ep->flags & HL_EP_F_INGRESS) &&
	    hl_policy_decide(skb, ep, t->daddr, hl_ipcache_identity(t->saddr), HL_POLICY_INGRESS,
			     t, t->daddr, t->dport) < 0)
		return -HL_DROP_POLICY;
	hl_policy_ct_create(&key);
	return 0;
}

/* Ingress for a packet about to go into a pod (read from the packet): a drop is counted and
 * reported; 0 when it may go on.
 */
static __always_inline int hl_policy_ingress_skb(struct __sk_buff *skb, const struct hl_trace *tr)
{
	struct hl_tuple t = {};
	struct hl_trace none = {};

	if (hl_tuple_from_skb(skb, &t) < 0 || hl_policy_ingress(skb, &t) == 0)
		return 0;
	if (!tr) {
		none.saddr = t.saddr;
		none.daddr = t.daddr;
		none.sport = t.sport;
		none.dport = t.dport;
		none.proto = t.proto;
		tr = &none;
	}
	hl_drop_report(skb, tr, HL_DROP_POLICY);
	return -HL_DROP_POLICY;
}

#endif /* HEXLANE_POLICY_H */
