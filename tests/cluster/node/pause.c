/* The pod sandbox's process for the test node's pause image: holds the pod's
 * namespaces, reaps orphans, exits on SIGINT or SIGTERM. Built static by
 * scripts/cluster (no registry here to pull registry.k8s.io/pause from). */
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/wait.h>
static void sigdown(int s) { _exit(0); }
static void sigreap(int s) { while (waitpid(-1, NULL, WNOHANG) > 0); }
int main(void) {
  struct sigaction a = {0};
  a.sa_handler = sigdown; sigaction(SIGINT, &a, NULL); sigaction(SIGTERM, &a, NULL);
  a.sa_handler = sigreap; a.sa_flags = SA_NOCLDSTOP; sigaction(SIGCHLD, &a, NULL);
  for (;;) pause();
}
