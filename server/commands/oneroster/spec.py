"""What the OneRoster 1.1 and 1.2 CSV bindings say, as far as pledgeql reads them."""

from __future__ import annotations

COMMON = ("sourcedId", "status", "dateLastModified")

COLUMNS: dict[str, dict[str, tuple[str, ...]]] = {
    "1.1": {
        "orgs.csv": (*COMMON, "name", "type", "identifier", "parentSourcedId"),
        "academicSessions.csv": (*COMMON, "title", "type", "startDate", "endDate", "parentSourcedId", "schoolYear"),
        "courses.csv": (
            *COMMON,
            "schoolYearSourcedId",
            "title",
            "courseCode",
            "grades",
            "orgSourcedId",
            "subjects",
            "subjectCodes",
        ),
        "classes.csv": (
            *COMMON,
            "title",
            "grades",
            "courseSourcedId",
            "classCode",
            "classType",
            "location",
            "schoolSourcedId",
            "termSourcedIds",
            "subjects",
            "subjectCodes",
            "periods",
        ),
        "users.csv": (
            *COMMON,
            "enabledUser",
            "orgSourcedIds",
            "role",
            "username",
            "userIds",
            "givenName",
            "familyName",
            "middleName",
            "identifier",
            "email",
            "sms",
            "phone",
            "agentSourcedIds",
            "grades",
            "password",
        ),
        "enrollments.csv": (
            *COMMON,
            "classSourcedId",
            "schoolSourcedId",
            "userSourcedId",
            "role",
            "primary",
            "beginDate",
            "endDate",
        ),
        "demographics.csv": (
            *COMMON,
            "birthDate",
            "sex",
            "americanIndianOrAlaskaNative",
            "asian",
            "blackOrAfricanAmerican",
            "nativeHawaiianOrOtherPacificIslander",
            "white",
            "demographicRaceTwoOrMoreRaces",
            "hispanicOrLatinoEthnicity",
            "countryOfBirthCode",
            "stateOfBirthAbbreviation",
            "cityOfBirth",
            "publicSchoolResidenceStatus",
        ),
    },
}
COLUMNS["1.2"] = {
    **COLUMNS["1.1"],
    "users.csv": (
        *COMMON,
        "enabledUser",
        "username",
        "userIds",
        "givenName",
        "familyName",
        "middleName",
        "identifier",
        "email",
        "sms",
        "phone",
        "agentSourcedIds",
        "grades",
        "password",
        "userMasterIdentifier",
        "resourceSourcedIds",
        "preferredGivenName",
        "preferredMiddleName",
        "preferredFamilyName",
        "primaryOrgSourcedId",
        "pronouns",
    ),
    "roles.csv": (
        *COMMON,
        "userSourcedId",
        "roleType",
        "role",
        "beginDate",
        "endDate",
        "orgSourcedId",
        "userProfileSourcedId",
    ),
}

# Columns a file cannot be read without (the header must name them).
REQUIRED_COLUMNS: dict[str, dict[str, tuple[str, ...]]] = {
    "1.1": {
        "orgs.csv": ("sourcedId", "name", "type"),
        "academicSessions.csv": ("sourcedId", "type"),
        "courses.csv": ("sourcedId", "title"),
        "classes.csv": ("sourcedId", "title", "schoolSourcedId"),
        "users.csv": ("sourcedId", "role", "username", "givenName", "familyName", "orgSourcedIds"),
        "enrollments.csv": ("sourcedId", "classSourcedId", "userSourcedId", "role"),
        "demographics.csv": ("sourcedId",),
    },
}
REQUIRED_COLUMNS["1.2"] = {
    **REQUIRED_COLUMNS["1.1"],
    "users.csv": ("sourcedId", "givenName", "familyName"),
    "roles.csv": ("sourcedId", "userSourcedId", "role", "orgSourcedId"),
}

# Files pledgeql reads, in the order they are processed.
READ_FILES = (
    "orgs.csv",
    "academicSessions.csv",
    "courses.csv",
    "classes.csv",
    "users.csv",
    "roles.csv",
    "demographics.csv",
    "enrollments.csv",
)
# Files of the bindings pledgeql has no use for (gradebook, resources, profiles).
UNUSED_FILES = (
    "categories.csv",
    "classResources.csv",
    "courseResources.csv",
    "lineItems.csv",
    "resources.csv",
    "results.csv",
    "userProfiles.csv",
    "userResources.csv",
    "scoreScales.csv",
    "lineItemLearningObjectiveIds.csv",
    "lineItemScoreScales.csv",
    "resultLearningObjectiveIds.csv",
    "resultScoreScales.csv",
)
KNOWN_FILES = (*READ_FILES, *UNUSED_FILES)
VERSIONS = ("1.1", "1.2")
MODES = ("bulk", "delta", "absent")
STATUSES = ("active", "tobedeleted")

ORG_TYPES = ("department", "school", "district", "local", "state", "national")
CLASS_TYPES = ("homeroom", "scheduled")
SEXES = ("male", "female", "other", "unspecified")
ROLE_TYPES = ("primary", "secondary")

# OneRoster user roles -> pledgeql roles (None: not an account pledgeql has).
USER_ROLES: dict[str, str | None] = {
    "student": "STUDENT",
    "teacher": "TEACHER",
    "parent": "GUARDIAN",
    "guardian": "GUARDIAN",
    "relative": "GUARDIAN",
    "administrator": "SCHOOL_ADMIN",
    "siteadministrator": "SCHOOL_ADMIN",
    "principal": "SCHOOL_ADMIN",
    # District administrators hold every family's record under RECORD_ACCESS:
    # their accounts are set up by the platform operator, never by an import.
    "districtadministrator": None,
    "systemadministrator": None,
    "aide": None,
    "proctor": None,
    "counselor": None,
}
ROLE_SPELLING = {
    "siteadministrator": "siteAdministrator",
    "districtadministrator": "districtAdministrator",
    "systemadministrator": "systemAdministrator",
}
ENROLLMENT_ROLES = ("student", "teacher", "administrator", "proctor", "aide", "guardian", "parent", "relative")

RACES = {
    "americanIndianOrAlaskaNative": "American Indian or Alaska Native",
    "asian": "Asian",
    "blackOrAfricanAmerican": "Black or African American",
    "nativeHawaiianOrOtherPacificIslander": "Native Hawaiian or Other Pacific Islander",
    "white": "White",
    "demographicRaceTwoOrMoreRaces": "Two or more races",
    "hispanicOrLatinoEthnicity": "Hispanic or Latino",
}
