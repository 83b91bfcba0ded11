"""OneRoster 1.1 and 1.2 CSV import (``pledgeql roster import``).

``reader`` opens a package (zip or folder) and reads its CSV files with the
line and column of every value; ``plan`` checks the records against the
specification, against each other and against what the district already
holds, and decides what to write; ``writer`` writes it in one transaction.
Every problem names its file, line and column.
"""
