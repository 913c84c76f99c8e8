package audit

// Finding codes. They are a stable interface for scripts: never renamed or
// reused. docs/findings.md documents each one; a test checks that every code
// here is documented there.
const (
	CodeNamespaceNotSelected       = "NamespaceNotSelected"
	CodeNamespaceInjectionDisabled = "NamespaceInjectionDisabled"
	CodeConflictingInjectionLabels = "ConflictingInjectionLabels"
	CodeInjectorWebhookMissing     = "InjectorWebhookMissing"
	CodeInjectorNotInstalled       = "InjectorNotInstalled"
	CodeAmbientNamespace           = "AmbientNamespace"
	CodePodNeedsRestart            = "PodNeedsRestart"
	CodePodRevisionMismatch        = "PodRevisionMismatch"
	CodePodSidecarNotExpected      = "PodSidecarNotExpected"
	CodePodNotInjectable           = "PodNotInjectable"
	CodeMTLSDisabled               = "MTLSDisabled"
	CodeStrictWithUnmeshedPods     = "StrictWithUnmeshedPods"
	CodePeerAuthenticationIgnored  = "PeerAuthenticationIgnored"
	CodeWorkloadMTLSOverride       = "WorkloadMTLSOverride"
	CodeDestinationRuleTLSDisabled = "DestinationRuleTLSDisabled"
	CodeAutoMTLSDisabled           = "AutoMTLSDisabled"
	CodeAllowNothingWithoutAllows  = "AllowNothingWithoutAllows"
	CodeIstioPoliciesUnreadable    = "IstioPoliciesUnreadable"
	CodePlaintextClient            = "PlaintextClient"
	CodePlaintextOutbound          = "PlaintextOutbound"
	CodeTrafficUnavailable         = "TrafficUnavailable"
	CodeTelemetryMissing           = "TelemetryMissing"
	CodeDestinationRuleTLSNotIstio = "DestinationRuleTLSNotIstio"
	CodeDestinationRulesPartial    = "DestinationRulesPartial"
	CodeJobNotMeshed               = "JobNotMeshed"
	// CodePeerAuthenticationManagedElsewhere: the namespace-wide policy the
	// migration changes is managed by Argo CD, Flux, Helm or another
	// controller, which would revert the change.
	CodePeerAuthenticationManagedElsewhere = "PeerAuthenticationManagedElsewhere"
	// The ambient data plane's checks (pkg/audit/ambient.go).
	CodeAmbientNodeAgentsMissing = "AmbientNodeAgentsMissing"
	CodeAmbientPodNotCaptured    = "AmbientPodNotCaptured"
	CodeAmbientPodHasSidecar     = "AmbientPodHasSidecar"
	CodeAmbientWorkloadOptedOut  = "AmbientWorkloadOptedOut"
	CodeAmbientL7PolicyOnZtunnel = "AmbientL7PolicyOnZtunnel"
)

// Codes lists every finding code.
var Codes = []string{
	CodeNamespaceNotSelected, CodeNamespaceInjectionDisabled, CodeConflictingInjectionLabels,
	CodeInjectorWebhookMissing, CodeInjectorNotInstalled, CodeAmbientNamespace,
	CodePodNeedsRestart, CodePodRevisionMismatch, CodePodSidecarNotExpected, CodePodNotInjectable,
	CodeMTLSDisabled, CodeStrictWithUnmeshedPods, CodePeerAuthenticationIgnored, CodeWorkloadMTLSOverride,
	CodeDestinationRuleTLSDisabled, CodeAutoMTLSDisabled, CodeAllowNothingWithoutAllows, CodeIstioPoliciesUnreadable,
	CodePlaintextClient, CodePlaintextOutbound, CodeTrafficUnavailable, CodeTelemetryMissing,
	CodeDestinationRuleTLSNotIstio, CodeDestinationRulesPartial, CodeJobNotMeshed,
	CodePeerAuthenticationManagedElsewhere,
	CodeAmbientNodeAgentsMissing, CodeAmbientPodNotCaptured, CodeAmbientPodHasSidecar, CodeAmbientWorkloadOptedOut,
	CodeAmbientL7PolicyOnZtunnel,
}
