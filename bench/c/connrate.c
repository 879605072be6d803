/* New-connection rate and latency, client and server, for bench/datapath_bench.py.
 *
 *   connrate server PORT WORKERS
 *       WORKERS processes accept on PORT (SO_REUSEPORT); each connection: read a request,
 *       answer "ok\n", close.
 *   connrate client HOST PORT SECONDS THREADS
 *       THREADS threads open connections back to back for SECONDS: connect, send a byte,
 *       read the answer, close with RST (SO_LINGER 0, so no TIME_WAIT piles up). Prints one
 *       JSON line: {"conns", "errors", "rate", "p50_us", "p99_us"} (latency = connect to
 *       answer read).
 * With CONNRATE_HTTP=1 in the environment the request is an HTTP/1.1 GET and the answer an
 * HTTP/1.1 200 (bench/l7_bench.py).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <signal.h>
#include <sys/wait.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAX_SAMPLES 4000000

static struct sockaddr_in target;
static double deadline;
static unsigned *samples;
static long n_samples, n_errors;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static const char *request = "x", *answer = "ok\n";

static void http_mode(void)
{
	const char *http = getenv("CONNRATE_HTTP");

	if (http && !strcmp(http, "1")) {
		request = "GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
		answer = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";
	}
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int serve(int port, int workers)
{
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons(port) };
	int i;

	for (i = 0; i < workers; i++) {
		if (fork() == 0) {
			int one = 1, s = socket(AF_INET, SOCK_STREAM, 0);
			char buf[256];

			prctl(PR_SET_PDEATHSIG, SIGKILL); /* workers end with the server */
			setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
			setsockopt(s, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
			if (bind(s, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(s, 4096) < 0) {
				perror("bind/listen");
				_exit(1);
			}
			for (;;) {
				int c = accept(s, NULL, NULL);

				if (c < 0)
					continue;
				if (read(c, buf, sizeof(buf)) > 0 &&
				    write(c, answer, strlen(answer)) < 0)
					perror("write");
				close(c);
			}
		}
	}
	printf("ready\n");
	fflush(stdout);
	while (wait(NULL) > 0)
		;
	return 0;
}

static void *client_thread(void *arg)
{
	unsigned *mine = malloc(sizeof(unsigned) * (MAX_SAMPLES / 16));
	long n = 0, errors = 0;
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	struct timeval tv = { .tv_sec = 1 }; /* a lost SYN is an error, not a 2-minute stall */
	int one = 1;
	char buf[128];
	size_t len = strlen(request);

	(void)arg;
	while (now() < deadline) {
		double t0 = now();
		int s = socket(AF_INET, SOCK_STREAM, 0);

		setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		if (connect(s, (struct sockaddr *)&target, sizeof(target)) < 0 ||
		    write(s, request, len) != (ssize_t)len || read(s, buf, sizeof(buf)) <= 0) {
			errors++;
			close(s);
			continue;
		}
		close(s);
		if (n < MAX_SAMPLES / 16)
			mine[n++] = (unsigned)((now() - t0) * 1e6);
	}
	pthread_mutex_lock(&lock);
	if (n_samples + n <= MAX_SAMPLES) {
		memcpy(samples + n_samples, mine, n * sizeof(unsigned));
		n_samples += n;
	}
	n_errors += errors;
	pthread_mutex_unlock(&lock);
	free(mine);
	return NULL;
}

static int cmp(const void *a, const void *b)
{
	unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;

	return x < y ? -1 : x > y;
}

static int client(const char *host, int port, double seconds, int threads)
{
	pthread_t tids[256];
	double start;
	int i;

	target.sin_family = AF_INET;
	target.sin_port = htons(port);
	inet_pton(AF_INET, host, &target.sin_addr);
	samples = malloc(sizeof(unsigned) * MAX_SAMPLES);
	if (threads > 256)
		threads = 256;
	start = now();
	deadline = start + seconds;
	for (i = 0; i < threads; i++)
		pthread_create(&tids[i], NULL, client_thread, NULL);
	for (i = 0; i < threads; i++)
		pthread_join(tids[i], NULL);
	qsort(samples, n_samples, sizeof(unsigned), cmp);
	printf("{\"conns\": %ld, \"errors\": %ld, \"rate\": %.1f, \"p50_us\": %u, \"p99_us\": %u}\n",
	       n_samples, n_errors, n_samples / (now() - start),
	       n_samples ? samples[n_samples / 2] : 0,
	       n_samples ? samples[(long)(n_samples * 0.99)] : 0);
	return 0;
}

int main(int argc, char **argv)
{
	http_mode();
	if (argc == 4 && !strcmp(argv[1], "server"))
		return serve(atoi(argv[2]), atoi(argv[3]));
	if (argc == 6 && !strcmp(argv[1], "client"))
		return client(argv[2], atoi(argv[3]), atof(argv[4]), atoi(argv[5]));
	fprintf(stderr, "usage: connrate server PORT WORKERS | client HOST PORT SECONDS THREADS\n");
	return 2;
}
