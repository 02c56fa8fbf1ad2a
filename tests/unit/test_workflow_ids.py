"""A loop's workflow id names one project's service: two loops never share one."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from docktor import names
from docktor.spec.primitives import MAX_NAME_LENGTH, PROJECT_NAME_RE, SERVICE_NAME_PATTERN

PROJECTS = st.from_regex(PROJECT_NAME_RE, fullmatch=True).filter(
    lambda name: len(name) <= MAX_NAME_LENGTH
)
SERVICES = st.from_regex(SERVICE_NAME_PATTERN, fullmatch=True).filter(
    lambda name: len(name) <= MAX_NAME_LENGTH
)


def test_names_that_share_a_dash_get_different_ids() -> None:
    assert names.workflow_id("a-b", "c") != names.workflow_id("a", "b-c")
    # What older releases did, and why a loop found under it is checked before it is used.
    assert names.legacy_workflow_id("a-b", "c") == names.legacy_workflow_id("a", "b-c")


@given(PROJECTS, SERVICES, PROJECTS, SERVICES)
def test_different_names_never_share_an_id(
    project: str, service: str, other_project: str, other_service: str
) -> None:
    if (project, service) != (other_project, other_service):
        assert names.workflow_id(project, service) != names.workflow_id(
            other_project, other_service
        )


@given(PROJECTS, SERVICES)
def test_the_id_reads_back_as_its_names(project: str, service: str) -> None:
    assert names.workflow_id(project, service).split(names.WORKFLOW_ID_SEPARATOR) == [
        "docktor",
        project,
        service,
    ]
