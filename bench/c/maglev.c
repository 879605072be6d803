/* A straightforward C implementation of Cilium's Maglev table fill, the yardstick for
 * hexlane.lb.maglev.build_table (bench/maglev_bench.py compiles it with gcc -O2 and runs it).
 *
 * Input on stdin:   M SEED_MURMUR N, then N lines "ID WEIGHT HASH_STRING".
 * Output on stdout: one line "ns <best build time in nanoseconds>", then the M backend ids.
 * Usage: maglev MODE REPEAT, MODE being
 *   perm  Cilium's own shape: an N x M permutation array computed up front, then the turns;
 *   lazy  the same turns computing each backend's next preference on the fly (no array).
 * The timed part is what build_table does: sort by hash string, MurmurHash3, fill.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct backend {
	uint32_t id;
	uint32_t weight;
	char name[128];
};

static uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static uint64_t fmix64(uint64_t k)
{
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdULL;
	k ^= k >> 33;
	k *= 0xc4ceb9fe1a85ec53ULL;
	k ^= k >> 33;
	return k;
}

/* MurmurHash3 x64_128 (little-endian host). */
static void murmur3(const uint8_t *data, size_t len, uint32_t seed, uint64_t *o1, uint64_t *o2)
{
	const uint64_t c1 = 0x87c37b91114253d5ULL, c2 = 0x4cf5ad432745937fULL;
	size_t nblocks = len / 16, i;
	uint64_t h1 = seed, h2 = seed, k1, k2;

	for (i = 0; i < nblocks; i++) {
		memcpy(&k1, data + i * 16, 8);
		memcpy(&k2, data + i * 16 + 8, 8);
		k1 *= c1; k1 = rotl64(k1, 31); k1 *= c2; h1 ^= k1;
		h1 = rotl64(h1, 27); h1 += h2; h1 = h1 * 5 + 0x52dce729;
		k2 *= c2; k2 = rotl64(k2, 33); k2 *= c1; h2 ^= k2;
		h2 = rotl64(h2, 31); h2 += h1; h2 = h2 * 5 + 0x38495ab5;
	}
	const uint8_t *tail = data + nblocks * 16;
	size_t rest = len & 15;
	k1 = 0;
	k2 = 0;
	for (i = rest; i > 8; i--)
		k2 ^= (uint64_t)tail[i - 1] << ((i - 9) * 8);
	if (rest > 8) {
		k2 *= c2; k2 = rotl64(k2, 33); k2 *= c1; h2 ^= k2;
	}
	for (i = rest < 8 ? rest : 8; i > 0; i--)
		k1 ^= (uint64_t)tail[i - 1] << ((i - 1) * 8);
	if (rest > 0) {
		k1 *= c1; k1 = rotl64(k1, 31); k1 *= c2; h1 ^= k1;
	}
	h1 ^= len; h2 ^= len;
	h1 += h2; h2 += h1;
	h1 = fmix64(h1); h2 = fmix64(h2);
	h1 += h2; h2 += h1;
	*o1 = h1;
	*o2 = h2;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(((const struct backend *)a)->name, ((const struct backend *)b)->name);
}

/* Cilium's weighted turn selection; returns the backend whose turn turn n is. */
static size_t pick(uint64_t n, size_t l, const struct backend *bs, double *cntr,
		   uint64_t weight_sum, int weighted)
{
	size_t i = n % l;

	if (!weighted)
		return i;
	while ((n + 1) * (uint64_t)bs[i].weight < (uint64_t)cntr[i])
		i = (i + 1) % l;
	cntr[i] += (double)weight_sum;
	return i;
}

static void build(struct backend *bs, size_t l, uint64_t m, uint32_t seed, int lazy,
		  int64_t *entry, uint64_t *perm, uint64_t *offset, uint64_t *skip, uint64_t *next,
		  double *cntr)
{
	uint64_t weight_sum = 0, n, j, h1, h2;
	size_t i;
	int weighted;

	qsort(bs, l, sizeof(*bs), by_name);
	for (i = 0; i < l; i++) {
		murmur3((const uint8_t *)bs[i].name, strlen(bs[i].name), seed, &h1, &h2);
		offset[i] = h1 % m;
		skip[i] = h2 % (m - 1) + 1;
		next[i] = 0;
		weight_sum += bs[i].weight;
		cntr[i] = (double)bs[i].weight / (double)l;
	}
	weighted = weight_sum / l > 1;
	if (!lazy) {
		for (i = 0; i < l; i++) {
			perm[i * m] = offset[i] % m;
			for (j = 1; j < m; j++)
				perm[i * m + j] = (perm[i * m + j - 1] + skip[i]) % m;
		}
	} else {
		for (i = 0; i < l; i++)
			next[i] = offset[i]; /* the next candidate slot itself */
	}
	for (j = 0; j < m; j++)
		entry[j] = -1;
	for (n = 0; n < m; n++) {
		uint64_t c;

		i = pick(n, l, bs, cntr, weight_sum, weighted);
		if (!lazy) {
			c = perm[i * m + next[i]];
			while (entry[c] >= 0) {
				next[i]++;
				c = perm[i * m + next[i]];
			}
			entry[c] = bs[i].id;
			next[i]++;
		} else {
			c = next[i];
			while (entry[c] >= 0) {
				c += skip[i];
				if (c >= m)
					c -= m;
			}
			entry[c] = bs[i].id;
			c += skip[i];
			if (c >= m)
				c -= m;
			next[i] = c;
		}
	}
}

int main(int argc, char **argv)
{
	unsigned long long m, l, i;
	unsigned int seed;
	int lazy, repeat, r;

	if (argc != 3 || (strcmp(argv[1], "perm") && strcmp(argv[1], "lazy"))) {
		fprintf(stderr, "usage: %s perm|lazy REPEAT < input\n", argv[0]);
		return 2;
	}
	lazy = !strcmp(argv[1], "lazy");
	repeat = atoi(argv[2]);
	if (scanf("%llu %u %llu", &m, &seed, &l) != 3 || l == 0 || m < 2) {
		fprintf(stderr, "bad header\n");
		return 2;
	}
	struct backend *input = calloc(l, sizeof(*input));
	struct backend *bs = calloc(l, sizeof(*bs));
	for (i = 0; i < l; i++) {
		if (scanf("%u %u %127s", &input[i].id, &input[i].weight, input[i].name) != 3) {
			fprintf(stderr, "bad backend line %llu\n", i);
			return 2;
		}
	}
	int64_t *entry = malloc(m * sizeof(*entry));
	uint64_t *perm = lazy ? NULL : malloc(l * m * sizeof(*perm));
	uint64_t *offset = malloc(l * sizeof(uint64_t)), *skip = malloc(l * sizeof(uint64_t));
	uint64_t *next = malloc(l * sizeof(uint64_t));
	double *cntr = malloc(l * sizeof(double));
	if (!entry || (!lazy && !perm) || !offset || !skip || !next || !cntr) {
		fprintf(stderr, "out of memory\n");
		return 1;
	}
	long long best = -1;
	for (r = 0; r < repeat; r++) {
		struct timespec t0, t1;

		memcpy(bs, input, l * sizeof(*bs));
		clock_gettime(CLOCK_MONOTONIC, &t0);
		build(bs, l, m, seed, lazy, entry, perm, offset, skip, next, cntr);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		long long ns = (t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
		if (best < 0 || ns < best)
			best = ns;
	}
	printf("ns %lld\n", best);
	for (i = 0; i < m; i++)
		printf("%lld\n", (long long)entry[i]);
	return 0;
}
