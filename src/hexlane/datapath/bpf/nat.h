/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The load balancer's translations: service -> backend (with NodePort SNAT or a DSR option
 * when the backend lives on another node), and the reverse translation of replies.
 *
 * Conntrack (conntrack.h) holds per flow a service entry (client -> frontend: the backend,
 * and for SNAT the NAT address and port) and a reply entry keyed by the tuple after
 * translation (so the reply finds it by swapping its own addresses): for SNAT that tuple is
 * node address:NAT port -> backend and the entry remembers the client to translate back to.
 */
#ifndef HEXLANE_NAT_H
#define HEXLANE_NAT_H

#include "common.h"
#include "hexlane_maps.h"
#include "metrics.h"
#include "parse.h"
#include "csum.h"
#include "conntrack.h"
#include "lb.h"
#include "icmp.h"
#include "events.h"
#include "policy.h"

#define AF_INET 2
#define HL_LOOPBACK_IFINDEX 1 /* lo is the first link of every network namespace */

/* How a new flow leaves this node (chosen per flow, kept in its service entry). */
#define HL_FWD_LOCAL 0 /* DNAT only: the backend is local, or the client is inside */
#define HL_FWD_SNAT  1 /* DNAT and SNAT to the node address: replies come back through us */
#define HL_FWD_DSR   2 /* DNAT and the service address in an IPv4 option: replies go direct */

/* hl_lb4_translate's results besides -(drop reason) */
#define HL_XLATED   0
#define HL_REJECTED 1 /* turned into an ICMP error, to be redirected (verdict in *verdict) */

struct hl_dsr_opt {
	__u8 type;
	__u8 len;
	__be16 port;
	__be32 addr;
};

static __always_inline __be32 hl_node_ip(void)
{
	__u32 zero = 0;
	struct lb_node_config *cfg = bpf_map_lookup_elem(&hl_lb_config, &zero);

	return cfg ? cfg->node_ip : 0;
}

/* Claim a NAT port for client -> backend leaving as node_ip: the client's own port when no
 * other flow to this backend uses it, else a few random ports. The reply entry is created
 * with BPF_NOEXIST, so two flows never share one.
 */
static __always_inline int hl_snat_claim(struct __sk_buff *skb, const struct pkt4 *p,
					 const struct lb4_backend *backend, __u32 backend_id,
					 __u16 rev_nat, __be32 node_ip, __be16 *nat_port)
{
	struct ct4_key key = {
		.saddr = node_ip,
		.daddr = backend->address,
		.dport = backend->port,
		.proto = p->proto,
		.flags = CT_F_REPLY,
	};
	struct ct4_entry entry = {
		.last_seen_ns = bpf_ktime_get_ns(),
		.packets = 0,
		.backend_id = backend_id,
		.rev_nat_index = rev_nat,
		.flags = CT_ENTRY_F_SNAT,
		.nat_addr = p->saddr,
		.nat_port = p->sport,
	};
	/* From a random place: a tuple reused quickly (a client's port, freed on each close,
	 * to one frontend) must not always try the same few ports, which closed flows still
	 * hold through the backend's TIME_WAIT.
	 */
	__u32 start = bpf_get_prandom_u32();
	int i;

	key.sport = p->sport;
	if (bpf_map_update_elem(&hl_ct4, &key, &entry, BPF_NOEXIST) == 0) {
		*nat_port = key.sport;
		return 0;
	}
#pragma unroll
	for (i = 0; i < SNAT_PORT_TRIES; i++) {
		__u32 port = SNAT_PORT_MIN + (start + i * 7919) % (SNAT_PORT_MAX - SNAT_PORT_MIN + 1);

		key.sport = bpf_htons((__u16)port);
		if (bpf_map_update_elem(&hl_ct4, &key, &entry, BPF_NOEXIST) == 0) {
			*nat_port = key.sport;
			return 0;
		}
	}
	return -HL_DROP_SNAT_PORTS;
}

/* Insert the DSR option after the (option-less) IPv4 header and fix the header checksum;
 * the L4 checksum is unchanged (its pseudo header counts the L4 length, not the IP one).
 */
static __always_inline int hl_dsr_insert(struct __sk_buff *skb, __be32 svc_addr,
					 __be16 svc_port)
{
	struct hl_dsr_opt opt = {
		.type = DSR_IPV4_OPT_TYPE,
		.len = DSR_IPV4_OPT_LEN,
		.port = svc_port,
		.addr = svc_addr,
	};
	__u32 l3 = sizeof(struct ethhdr);
	__be16 old_word, new_word, old_len, new_len;
	__s64 sum;

	if (bpf_skb_load_bytes(skb, l3, &old_word, sizeof(old_word)) < 0 ||
	    bpf_skb_load_bytes(skb, l3 + offsetof(struct iphdr, tot_len), &old_len,
			       sizeof(old_len)) < 0)
		return -HL_DROP_TRUNCATED;
	/* version 4, ihl 5 + 2 words: the first byte of the header */
	new_word = (old_word & bpf_htons(0x00ff)) | bpf_htons(0x4700);
	new_len = bpf_htons(bpf_ntohs(old_len) + sizeof(opt));
	if (bpf_skb_adjust_room(skb, sizeof(opt), BPF_ADJ_ROOM_NET, 0) < 0)
		return -HL_DROP_WRITE;
	if (bpf_skb_store_bytes(skb, l3 + sizeof(struct iphdr), &opt, sizeof(opt), 0) < 0 ||
	    bpf_skb_store_bytes(skb, l3, &new_word, sizeof(new_word), 0) < 0 ||
	    bpf_skb_store_bytes(skb, l3 + offsetof(struct iphdr, tot_len), &new_len,
				sizeof(new_len), 0) < 0)
		return -HL_DROP_WRITE;
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_word, new_word, sizeof(new_word)) < 0 ||
	    bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_len, new_len, sizeof(new_len)) < 0)
		return -HL_DROP_CSUM;
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&opt, sizeof(opt), 0);
	if (sum < 0 || bpf_l3_csum_replace(skb, IP_CSUM_OFF, 0, (__u32)sum, 0) < 0)
		return -HL_DROP_CSUM;
	return 0;
}

/* On the backend's node: a packet whose IPv4 header carries the DSR option. Remember where
 * the reply must seem to come from, then remove the option (the pod sees a plain packet).
 * Returns 1 when the option was there and handled, 0 when there is none, or -(reason).
 */
static __always_inline int hl_dsr_accept(struct __sk_buff *skb, const struct pkt4 *p,
					 struct hl_trace *tr)
{
	struct hl_dsr_opt opt;
	struct ct4_key key = {};
	struct ct4_entry entry = {};
	__u32 l3 = sizeof(struct ethhdr);
	__be16 old_word, new_word, old_len, new_len;
	__u32 ihl_len = p->l4_off - p->l3_off;
	__s64 sum;

	if (ihl_len < sizeof(struct iphdr) + sizeof(opt))
		return 0;
	if (bpf_skb_load_bytes(skb, l3 + sizeof(struct iphdr), &opt, sizeof(opt)) < 0)
		return -HL_DROP_DSR_OPT;
	if (opt.type != DSR_IPV4_OPT_TYPE)
		return 0;
	if (opt.len != DSR_IPV4_OPT_LEN || opt.addr == 0 || opt.port == 0)
		return -HL_DROP_DSR_OPT;

	hl_ct_key_forward(&key, p, CT_F_REPLY);
	entry.last_seen_ns = bpf_ktime_get_ns();
	entry.packets = 1;
	entry.bytes = skb->len;
	entry.flags = CT_ENTRY_F_DSR;
	entry.nat_addr = opt.addr;
	entry.nat_port = opt.port;
	if (bpf_map_update_elem(&hl_ct4, &key, &entry, BPF_ANY) < 0)
		return -HL_DROP_CT_CREATE;
	tr->svc_addr = opt.addr;
	tr->svc_port = opt.port;
	tr->flags |= HL_EV_F_SERVICE;

	/* Only a header of exactly 20 bytes + our option is stripped; with other options too,
	 * ours is left in place (the kernel ignores unknown options on received packets).
	 */
	if (ihl_len != sizeof(struct iphdr) + sizeof(opt))
		return 1;
	if (bpf_skb_load_bytes(skb, l3, &old_word, sizeof(old_word)) < 0 ||
	    bpf_skb_load_bytes(skb, l3 + offsetof(struct iphdr, tot_len), &old_len,
			       sizeof(old_len)) < 0)
		return -HL_DROP_TRUNCATED;
	new_word = (old_word & bpf_htons(0x00ff)) | bpf_htons(0x4500);
	new_len = bpf_htons(bpf_ntohs(old_len) - sizeof(opt));
	sum = bpf_csum_diff((__be32 *)&opt, sizeof(opt), NULL, 0, 0);
	if (sum < 0)
		return -HL_DROP_CSUM;
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_word, new_word, sizeof(new_word)) < 0 ||
	    bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_len, new_len, sizeof(new_len)) < 0 ||
	    bpf_l3_csum_replace(skb, IP_CSUM_OFF, 0, (__u32)sum, 0) < 0)
		return -HL_DROP_CSUM;
	if (bpf_skb_store_bytes(skb, l3, &new_word, sizeof(new_word), 0) < 0 ||
	    bpf_skb_store_bytes(skb, l3 + offsetof(struct iphdr, tot_len), &new_len,
				sizeof(new_len), 0) < 0)
		return -HL_DROP_WRITE;
	if (bpf_skb_adjust_room(skb, -(__s32)sizeof(opt), BPF_ADJ_ROOM_NET, 0) < 0)
		return -HL_DROP_WRITE;
	return 1;
}

/* A reply of a translated flow (matched through its reply entry): the source becomes the
 * frontend again (and for SNAT flows the destination the client). Returns 1 when translated
 * (`tr` then holds the backend -> client tuple and the frontend), 0 when the packet is no
 * reply of ours, or -(reason).
 */
static __always_inline int hl_lb4_reverse(struct __sk_buff *skb, const struct pkt4 *p,
					  struct hl_trace *tr)
{
	const struct lb4_reverse_nat *nat;
	struct ct4_key ct_key = {};
	struct ct4_entry *ct;
	__be32 new_saddr, client_addr = 0;
	__be16 new_sport, client_port = 0;
	__u16 rev_nat_index;
	int ret;

	hl_ct_key_reply(&ct_key, p);
	ct = bpf_map_lookup_elem(&hl_ct4, &ct_key);
	if (!ct)
		return 0;
	hl_ct_touch(ct, skb, p);
	if (ct->flags & CT_ENTRY_F_DSR) {
		new_saddr = ct->nat_addr;
		new_sport = ct->nat_port;
	} else {
		rev_nat_index = ct->rev_nat_index;
		nat = bpf_map_lookup_elem(&hl_lb4_revnat, &rev_nat_index);
		if (!nat)
			return -HL_DROP_REPLY_NAT;
		new_saddr = nat->address;
		new_sport = nat->port;
	}
	if (ct->flags & CT_ENTRY_F_SNAT) {
		client_addr = ct->nat_addr;
		client_port = ct->nat_port;
	}
	tr->svc_addr = new_saddr;
	tr->svc_port = new_sport;
	tr->flags |= HL_EV_F_SERVICE;
	if (client_addr) {
		tr->daddr = client_addr;
		tr->dport = client_port;
	}

	if (client_addr) {
		ret = hl_rewrite_dst(skb, p, client_addr, client_port);
		if (ret < 0)
			return ret;
	}
	ret = hl_rewrite_src(skb, p, new_saddr, new_sport);
	if (ret < 0)
		return ret;
	return 1;
}

static __always_inline bool hl_tcp_syn(const struct pkt4 *p)
{
	return (p->tcp_flags & (HL_TCP_SYN | HL_TCP_ACK)) == HL_TCP_SYN;
}

/* A packet that is not for a service may reuse the tuple of an earlier service flow (same
 * client port, same backend; translated here then, elsewhere or not at all now): that flow's
 * reply entry would turn this one's replies into the frontend's. A TCP SYN starts the tuple
 * over; UDP has no start, so any such packet shows the tuple is no longer that flow's.
 */
static __always_inline void hl_ct_forget_stale_reply(const struct pkt4 *p)
{
	struct ct4_key key = {};

	if (p->proto == IPPROTO_TCP && !hl_tcp_syn(p))
		return;
	hl_ct_key_forward(&key, p, CT_F_REPLY);
	if (p->proto == IPPROTO_UDP && !bpf_map_lookup_elem(&hl_ct4, &key))
		return; /* the common case: a lookup is cheaper than a delete */
	bpf_map_delete_elem(&hl_ct4, &key);
}

/* The reply entry's key of a flow DNATed to `backend` (client -> backend). */
static __always_inline void hl_ct_key_to_backend(struct ct4_key *key, const struct pkt4 *p,
						 const struct lb4_backend *backend)
{
	hl_ct_key_forward(key, p, CT_F_REPLY);
	key->daddr = backend->address;
	key->dport = backend->port;
}

/* The reply entry of an established flow, re-created when missing. */
static __always_inline int hl_ct_ensure_reply(struct __sk_buff *skb, const struct pkt4 *p,
					      const struct lb4_backend *backend, __u32 backend_id,
					      __u16 rev_nat, int fwd, __be32 node_ip,
					      __be16 nat_port)
{
	struct ct4_key key;
	struct ct4_entry entry = {
		.last_seen_ns = bpf_ktime_get_ns(),
		.backend_id = backend_id,
		.rev_nat_index = rev_nat,
	};
	struct ct4_entry *cur;

	if (fwd == HL_FWD_DSR)
		return 0; /* replies never come back through this node */
	hl_ct_key_to_backend(&key, p, backend);
	if (fwd == HL_FWD_SNAT) {
		key.saddr = node_ip;
		key.sport = nat_port;
		entry.flags = CT_ENTRY_F_SNAT;
		entry.nat_addr = p->saddr;
		entry.nat_port = p->sport;
	}
	/* The tuple may have served another flow since (the same client port to another
	 * frontend on the same backend, common with UDP): the latest flow owns it.
	 */
	cur = bpf_map_lookup_elem(&hl_ct4, &key);
	if (cur && cur->rev_nat_index == rev_nat && cur->backend_id == backend_id &&
	    cur->nat_addr == entry.nat_addr && cur->nat_port == entry.nat_port)
		return 0;
	if (bpf_map_update_elem(&hl_ct4, &key, &entry, BPF_ANY) < 0)
		return -HL_DROP_CT_CREATE;
	return 0;
}

/* Whether the tuple client -> backend is held by a flow of another frontend (its reply
 * entry, kept through the backend's TIME_WAIT after a close).
 */
static __always_inline bool hl_tuple_taken(const struct pkt4 *p,
					   const struct lb4_backend *backend, __u16 rev_nat)
{
	struct ct4_key key;
	struct ct4_entry *cur;

	hl_ct_key_to_backend(&key, p, backend);
	cur = bpf_map_lookup_elem(&hl_ct4, &key);

	return cur && cur->rev_nat_index != rev_nat;
}

/* Translate a packet to service `svc` (found under `key`): conntrack first (an established
 * flow keeps its backend while the backend exists), then session affinity, then the
 * service's algorithm. `external`: it arrived from outside the node, so a backend on another
 * node needs SNAT or DSR (per the service's forwarding mode). Returns HL_XLATED (with
 * *daddr_out the new destination, for routing, and *local_out whether it is a pod of this
 * node), HL_REJECTED (*verdict set), or -(reason).
 */
static __always_inline int hl_lb4_translate(struct __sk_buff *skb, const struct pkt4 *p,
					    struct lb4_key *key, const struct lb4_service *svc,
					    bool external, __be32 *daddr_out, int *verdict,
					    bool *local_out, struct hl_trace *tr)
{
	const struct lb4_backend *backend = NULL;
	struct ct4_key ct_key = {};
	struct ct4_entry *ct, entry = {};
	__u32 backend_id = 0;
	__be32 node_ip = 0;
	__be16 nat_port = 0;
	int fwd = HL_FWD_LOCAL;
	bool affinity;
	int ret;

	tr->svc_addr = p->daddr;
	tr->svc_port = p->dport;
	tr->flags |= HL_EV_F_SERVICE;
	hl_ct_key_forward(&ct_key, p, CT_F_SERVICE);
	/* A TCP SYN starts a new connection even where an entry of an earlier one with the
	 * same tuple lingers: choose again and write both entries anew.
	 */
	ct = hl_tcp_syn(p) ? NULL : bpf_map_lookup_elem(&hl_ct4, &ct_key);
	/* An entry of a service that is gone (its id given to another since) is not this
	 * flow's: choose anew, as Cilium does when the rev-NAT index differs.
	 */
	if (ct && ct->rev_nat_index != svc->rev_nat_index)
		ct = NULL;
	if (ct) {
		backend_id = ct->backend_id;
		backend = bpf_map_lookup_elem(&hl_lb4_backends, &backend_id);
		if (backend) {
			hl_ct_touch(ct, skb, p);
			if (ct->flags & CT_ENTRY_F_SNAT) {
				fwd = HL_FWD_SNAT;
				node_ip = ct->nat_addr;
				nat_port = ct->nat_port;
			} else if (ct->flags & CT_ENTRY_F_DSR) {
				fwd = HL_FWD_DSR;
			}
			/* The LRU may have evicted the reply entry alone: put it back. */
			ret = hl_ct_ensure_reply(skb, p, backend, backend_id, ct->rev_nat_index,
						 fwd, node_ip, nat_port);
			if (ret < 0)
				return ret;
		}
	}

	if (!backend) {
		if (svc->count == 0) {
			/* counted by the caller, which knows the direction */
			hl_drop_report(skb, tr, HL_DROP_NO_BACKEND);
			ret = hl_icmp_reject(skb, p);
			if (ret < 0)
				return ret;
			*verdict = ret;
			return HL_REJECTED;
		}
		affinity = svc->flags & SVC_FLAG_AFFINITY;
		backend_id = affinity ? hl_lb4_affinity_backend(svc, p->saddr) : 0;
		if (backend_id)
			backend = bpf_map_lookup_elem(&hl_lb4_backends, &backend_id);
		if (!backend) {
			backend_id = hl_lb4_select_backend(key, svc, p);
			backend = bpf_map_lookup_elem(&hl_lb4_backends, &backend_id);
			if (!backend)
				return -HL_DROP_BACKEND_MISSING;
		}
		if (affinity)
			hl_lb4_update_affinity(svc, p->saddr, backend_id);

		if (external && backend->node_local != BE_NODE_LOCAL) {
			fwd = (svc->flags2 & SVC_FLAG_FWD_MODE_DSR) ? HL_FWD_DSR : HL_FWD_SNAT;
			/* Only an option-less header gets the option: else fall back to SNAT. So
			 * does a client that is the backend itself (a pod reaching this node's
			 * NodePort and given itself): it cannot answer itself directly.
			 */
			if (fwd == HL_FWD_DSR && (p->l4_off - p->l3_off != sizeof(struct iphdr) ||
						  p->saddr == backend->address))
				fwd = HL_FWD_SNAT;
		}
		/* Hairpin: a pod reaching itself through a service. With its own address as
		 * source its reply would never leave it; from the loopback address it goes back
		 * through the veth, and so through the reverse translation.
		 */
		if (p->saddr == backend->address && backend->node_local == BE_NODE_LOCAL) {
			fwd = HL_FWD_SNAT;
			node_ip = HL_HAIRPIN_ADDR;
		} else if (fwd == HL_FWD_SNAT) {
			node_ip = hl_node_ip();
		} else if (hl_tuple_taken(p, backend, svc->rev_nat_index)) {
			/* The same client address and port reached this backend through another
			 * frontend lately: the backend may still hold that connection (TIME_WAIT)
			 * and drop the new SYN. Keep the address, move the port (netfilter's NAT
			 * does the same on a clash).
			 */
			fwd = HL_FWD_SNAT;
			node_ip = p->saddr;
		}
		if (fwd == HL_FWD_SNAT) {
			if (!node_ip)
				return -HL_DROP_NO_NODE_IP;
			ret = hl_snat_claim(skb, p, backend, backend_id, svc->rev_nat_index,
					    node_ip, &nat_port);
			if (ret < 0)
				return ret;
		}

		entry.last_seen_ns = bpf_ktime_get_ns();
		entry.packets = 1;
		entry.bytes = skb->len;
		entry.backend_id = backend_id;
		entry.rev_nat_index = svc->rev_nat_index;
		if (fwd == HL_FWD_SNAT) {
			entry.flags = CT_ENTRY_F_SNAT;
			entry.nat_addr = node_ip;
			entry.nat_port = nat_port;
		} else if (fwd == HL_FWD_DSR) {
			entry.flags = CT_ENTRY_F_DSR;
		}
		if (bpf_map_update_elem(&hl_ct4, &ct_key, &entry, BPF_ANY) < 0)
			return -HL_DROP_CT_CREATE;
		if (fwd == HL_FWD_LOCAL) {
			/* The reply entry is keyed by the translated tuple. */
			ct_key.daddr = backend->address;
			ct_key.dport = backend->port;
			ct_key.flags = CT_F_REPLY;
			ret = hl_ct_create(&ct_key, skb, backend_id, svc->rev_nat_index);
			if (ret < 0)
				return ret;
		}
	}

	*daddr_out = backend->address;
	*local_out = backend->node_local == BE_NODE_LOCAL;
	tr->daddr = backend->address;
	tr->dport = backend->port;
	if (fwd == HL_FWD_SNAT) {
		tr->xlated_saddr = node_ip;
		tr->flags |= HL_EV_F_XLATED_SRC;
	}
	ret = hl_rewrite_dst(skb, p, backend->address, backend->port);
	if (ret < 0)
		return ret;
	if (fwd == HL_FWD_SNAT) {
		ret = hl_rewrite_src(skb, p, node_ip, nat_port);
		if (ret < 0)
			return ret;
	} else if (fwd == HL_FWD_DSR) {
		ret = hl_dsr_insert(skb, p->daddr, p->dport);
		if (ret < 0)
			return ret;
	}
	return HL_XLATED;
}

/* Send a translated packet straight to where the FIB says its destination is (bypassing the
 * input route check that would reject a packet with our own source address, and the
 * forwarding path). With the neighbour known, the MACs are written here and the packet is
 * redirected: into the pod's namespace directly (`to_pod`, bpf_redirect_peer: the packet
 * appears on the pod's eth0 ingress without another pass through the backlog, as Cilium
 * delivers to local endpoints) or out of the egress device. An unresolved neighbour goes by
 * bpf_redirect_neigh with the FIB's next hop from an ingress hook; from an egress hook
 * (`egress`) the packet goes on its way to the kernel's forwarding, which resolves it: a
 * packet bpf_redirect_neigh queued there left, once resolved, with the Ethernet header it
 * had (hexlane_host's: tcpdump -e), and its receiver dropped it. A destination on this node
 * goes in through the loopback (below); no route: on as it is.
 */
static __always_inline int hl_fib_redirect(struct __sk_buff *skb, __be32 daddr, __u8 proto,
					   bool to_pod, bool egress, const struct hl_trace *tr)
{
	struct bpf_fib_lookup fib = {};
	struct bpf_redir_neigh nh = {};
	__be32 saddr;
	long ret;

	if (bpf_skb_load_bytes(skb, IP_SADDR_OFF, &saddr, sizeof(saddr)) < 0)
		return TC_ACT_OK;
	fib.family = AF_INET;
	fib.l4_protocol = proto;
	/* tot_len stays 0: the kernel then checks the skb against the egress device's MTU in a
	 * GSO-aware way. A tot_len would be compared as it is, and a GSO packet (many segments
	 * the client's TCP sent at once) always exceeds it: it went up the stack instead, where a
	 * SNATed one (source: our own address) is dropped. So uploads through a NodePort to a
	 * backend behind the tunnel stalled.
	 */
	fib.ipv4_src = saddr;
	fib.ipv4_dst = daddr;
	fib.ifindex = skb->ifindex;
	ret = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (tr)
		hl_trace_redirect(skb, tr, daddr, ret, fib.ifindex, to_pod);
	if (ret == BPF_FIB_LKUP_RET_SUCCESS) {
		if (bpf_skb_store_bytes(skb, 0, fib.dmac, ETH_ALEN, 0) < 0 ||
		    bpf_skb_store_bytes(skb, ETH_ALEN, fib.smac, ETH_ALEN, 0) < 0)
			return TC_ACT_OK;
		if (to_pod) {
			/* the pod veth's egress (hl_to_pod) is skipped: its policy is decided and
			 * the packet counted here
			 */
			if (hl_policy_ingress_skb(skb, tr) < 0)
				return hl_drop(skb, HL_DROP_POLICY, HL_DIR_INGRESS);
			hl_count_forward(skb, HL_DIR_INGRESS);
			return bpf_redirect_peer(fib.ifindex, 0);
		}
		return bpf_redirect(fib.ifindex, 0);
	}
	if (ret == BPF_FIB_LKUP_RET_NO_NEIGH) {
		if (egress)
			return TC_ACT_OK;
		nh.nh_family = AF_INET;
		nh.ipv4_nh = fib.ipv4_dst; /* the FIB's next hop */
		return bpf_redirect_neigh(fib.ifindex, &nh, sizeof(nh), 0);
	}
	/* For this node itself (a host-network backend here, or a reply to the node's own
	 * connection): in through the loopback, whose input takes a source that is one of the
	 * node's own addresses (a NodePort reply to the node, the router IP of hexlane_host),
	 * which any other device's input drops. lo's MAC is all zeros.
	 */
	if (ret == BPF_FIB_LKUP_RET_NOT_FWDED) {
		__u8 zero_macs[2 * ETH_ALEN] = {};

		if (bpf_skb_store_bytes(skb, 0, zero_macs, sizeof(zero_macs), 0) < 0)
			return TC_ACT_OK;
		return bpf_redirect(HL_LOOPBACK_IFINDEX, BPF_F_INGRESS);
	}
	return TC_ACT_OK;
}

#endif /* HEXLANE_NAT_H */
