/* floor: the zero-work DNS responder of the e2e benchmark.
 *
 * Reflects every UDP query back as its own answer (QR and RA set, RCODE
 * untouched, no records added), reading and writing in batches with
 * recvmmsg/sendmmsg on one thread. Whatever CPU it spends per query is what
 * the kernel's UDP path alone costs, and the QPS it sustains is the ceiling
 * of the client on this machine.
 *
 * usage: floor PORT   (binds 127.0.0.1:PORT; SIGTERM/SIGINT to stop)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 64
#define BUFSZ 1500

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: floor PORT\n"); return 2; }
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) { perror("socket"); return 1; }
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[1])) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) { perror("bind"); return 1; }
    struct sigaction act = { .sa_handler = on_signal };  /* no SA_RESTART: recvmmsg returns EINTR */
    sigaction(SIGTERM, &act, NULL);
    sigaction(SIGINT, &act, NULL);

    static char bufs[BATCH][BUFSZ];
    static struct sockaddr_in peers[BATCH];
    static struct iovec iov[BATCH];
    static struct mmsghdr msgs[BATCH];
    while (!stop) {
        for (int i = 0; i < BATCH; i++) {
            iov[i] = (struct iovec){ bufs[i], BUFSZ };
            msgs[i].msg_hdr = (struct msghdr){ .msg_name = &peers[i], .msg_namelen = sizeof peers[i],
                                               .msg_iov = &iov[i], .msg_iovlen = 1 };
        }
        /* block for the first datagram, then take whatever else is queued */
        int n = recvmmsg(fd, msgs, BATCH, MSG_WAITFORONE, NULL);
        if (n <= 0) continue;
        int m = 0;
        for (int i = 0; i < n; i++) {
            if (msgs[i].msg_len < 12) continue;          /* not a DNS header: drop */
            bufs[i][2] |= 0x80;                          /* QR */
            bufs[i][3] |= 0x80;                          /* RA */
            iov[i].iov_len = msgs[i].msg_len;
            if (m != i) { msgs[m] = msgs[i]; }
            m++;
        }
        for (int sent = 0; sent < m;) {
            int k = sendmmsg(fd, msgs + sent, m - sent, 0);
            if (k <= 0) break;
            sent += k;
        }
    }
    close(fd);
    return 0;
}
