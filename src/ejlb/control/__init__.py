"""The EJFAT-compatible control plane: `server.ControlPlane` (gRPC LoadBalancer service, sync
listeners, controller), `client.LBManager`, and the pure cores it is built from (see README.md)."""
