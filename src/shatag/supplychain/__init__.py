"""What proves an image: the registry (:mod:`.registry`, :mod:`.manifests`), cosign
(:mod:`.signing`), syft (:mod:`.sbom`), the build metadata file (:mod:`.metadata`) and what happens
to a pushed digest, signing, SBOM, attestation and verification (:mod:`.evidence`)."""
