"""Entry point for the `feast` CLI run from this folder (`feast plan`, `feast apply`).

Feast imports this module to collect the objects; the platform itself calls
`features.repo.build_definitions` and never imports this file.
"""

from clv.settings import Settings
from features.repo import build_definitions

_definitions = build_definitions(Settings().features_dir)

customer = _definitions.customer
lead = _definitions.lead
customer_features = _definitions.views["customer_features"]
former_customer_features = _definitions.views["former_customer_features"]
lead_features = _definitions.views["lead_features"]
customer_directory = _definitions.views["customer_directory"]
lead_directory = _definitions.views["lead_directory"]
customer_ratios = _definitions.on_demand
churn_v1 = _definitions.services["churn_v1"]
expansion_v1 = _definitions.services["expansion_v1"]
reactivation_v1 = _definitions.services["reactivation_v1"]
referral_v1 = _definitions.services["referral_v1"]
clv_v1 = _definitions.services["clv_v1"]
