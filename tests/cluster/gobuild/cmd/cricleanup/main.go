// Command cricleanup stops and removes every pod sandbox (and so every
// container, network namespace and CNI allocation) of one CRI runtime.
// Usage: cricleanup unix:///path/to/containerd.sock
// It is used by down.sh so that leftovers of the test cluster are torn down
// through the runtime itself (CNI DEL included) rather than by killing shims.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: cricleanup unix:///path/to/runtime.sock")
		os.Exit(2)
	}
	conn, err := grpc.NewClient(os.Args[1], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintln(os.Stderr, "cricleanup:", err)
		os.Exit(1)
	}
	defer conn.Close()
	rt := runtime.NewRuntimeServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ctrs, err := rt.ListContainers(ctx, &runtime.ListContainersRequest{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "cricleanup: list containers:", err)
		os.Exit(1)
	}
	failed := false
	for _, c := range ctrs.Containers {
		if _, err := rt.StopContainer(ctx, &runtime.StopContainerRequest{ContainerId: c.Id, Timeout: 2}); err != nil {
			fmt.Fprintln(os.Stderr, "cricleanup: stop container", c.Id, err)
		}
		if _, err := rt.RemoveContainer(ctx, &runtime.RemoveContainerRequest{ContainerId: c.Id}); err != nil {
			fmt.Fprintln(os.Stderr, "cricleanup: remove container", c.Id, err)
			failed = true
		}
	}
	pods, err := rt.ListPodSandbox(ctx, &runtime.ListPodSandboxRequest{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "cricleanup: list sandboxes:", err)
		os.Exit(1)
	}
	for _, p := range pods.Items {
		if _, err := rt.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			fmt.Fprintln(os.Stderr, "cricleanup: stop sandbox", p.Id, err)
		}
		if _, err := rt.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			fmt.Fprintln(os.Stderr, "cricleanup: remove sandbox", p.Id, err)
			failed = true
		}
	}
	fmt.Printf("cricleanup: removed %d containers, %d sandboxes\n", len(ctrs.Containers), len(pods.Items))
	if failed {
		os.Exit(1)
	}
}
