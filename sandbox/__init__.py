"""A local Salesforce- and HubSpot-compatible CRM for the demo, rehearsals and every connector test.

Imports nothing from connectors/, scoring/ or sync/: it stands in for the vendors, so it must not share code
with the clients it judges.
"""

from sandbox.faults import Faults, FaultSpecError
from sandbox.server import Sandbox, SandboxOptions

__all__ = ["Faults", "FaultSpecError", "Sandbox", "SandboxOptions"]
