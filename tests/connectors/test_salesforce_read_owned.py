"""The pre-write re-read: `read_owned` returns what the org holds now, and `batch_size` matches the write path."""

from __future__ import annotations

import pandas as pd

from connectors.owned import OWNED_FIELDS

from .test_salesforce import account_ids, connect, icp_org  # noqa: F401  (fixture)


def test_read_owned_returns_the_values_the_org_holds_now(icp_org):  # noqa: F811
    ids = account_ids(icp_org)  # 500: more than one chunk of ids
    icp_org.sf.edit("Account", ids[3], {"ICP_Tier__c": "B", "ICP_Reasons__c": "a rep's note"})
    icp_org.sf.delete("Account", ids[5])
    connector = connect(icp_org)
    now = connector.read_owned([*ids, ids[3]])
    assert list(now.columns) == list(OWNED_FIELDS)
    assert ids[5] not in now.index and len(now) == len(ids) - 1  # a deleted record is simply absent
    assert now.loc[ids[3], "tier"] == "B" and now.loc[ids[3], "reasons"] == "a rep's note"
    assert pd.isna(now.loc[ids[4], "tier"])
    assert connector.read_owned([]).empty


def test_batch_size_is_one_collections_call_or_one_bulk_job(icp_org):  # noqa: F811
    connector = connect(icp_org, bulk_threshold=1000)
    assert connector.batch_size(10) == 200 and connector.batch_size(1000) == 200
    assert connector.batch_size(1001) == 1001
