/* The pod sandbox's PID 1 ("pause"): holds the pod's namespaces, reaps orphans, exits on
 * SIGTERM/SIGINT. Built static so the image needs no libc. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void quit(int sig) { (void)sig; _exit(0); }

static void reap(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(void) {
    struct sigaction stop = {.sa_handler = quit}, child = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP | SA_RESTART};
    if (getpid() != 1) {
        /* Only meaningful as a sandbox's init; say so instead of hanging a shell. */
        const char msg[] = "pause: not running as PID 1\n";
        (void)!write(2, msg, sizeof msg - 1);
    }
    sigaction(SIGINT, &stop, NULL);
    sigaction(SIGTERM, &stop, NULL);
    sigaction(SIGCHLD, &child, NULL);
    for (;;) pause();
    return EXIT_FAILURE;
}
