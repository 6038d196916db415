/* PID 1's part of the network: loopback up in the container's own network
 * namespace (an ioctl, no netlink needed). The supervisor adds and configures
 * the veth of bridge mode itself, on request. */
#include <net/if.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>

#include "sv.h"

void network_loopback_up(struct sv_child *c)
{
    long s = sv_raw(SYS_socket, AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0, 0, 0);
    if (s < 0)
        sv_fail_str(c, (int)-s, "socket(AF_INET, SOCK_DGRAM) failed");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    memcpy(ifr.ifr_name, "lo", 3);
    long r = sv_raw(SYS_ioctl, s, SIOCGIFFLAGS, (long)&ifr, 0, 0);
    if (r >= 0) {
        ifr.ifr_flags |= IFF_UP;
        r = sv_raw(SYS_ioctl, s, SIOCSIFFLAGS, (long)&ifr, 0, 0);
    }
    sv_raw(SYS_close, s, 0, 0, 0, 0);
    if (r < 0)
        sv_fail_str(c, (int)-r, "ioctl(SIOCSIFFLAGS, \"lo\", IFF_UP) failed");
}
