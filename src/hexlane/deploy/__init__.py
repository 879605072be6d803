"""What a real cluster needs to run hexlane, rendered from the Helm values (pure).

`render(values, inputs)` (`hexlane.deploy.render`) turns the same values the daemons read
into the Kubernetes objects of an install: the cilium.io CRDs, service accounts and their
least-privilege roles (`hexlane.deploy.rbac`), the config, the agent DaemonSet, the operator,
relay and UI Deployments and their Services, ServiceMonitors and dashboard ConfigMaps. No
I/O: the CRDs, dashboards and Hubble CA come in as data (`RenderInputs`), read by the caller
(`hexlane manifests`, `hexlane.cli.cmd_manifests`). Inspect with
`hexlane manifests --values F... [--set K=V]...`; docs/deploy.md says what each object is.
"""
