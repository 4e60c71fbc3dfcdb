"""The SD3 paper's Section 5.1 tables, shipped as reference data (variant names in canonical spelling).

* ``paper_table1()``: variant, rank_all, rank_5_steps, rank_50_steps (average non-dominated-sorting ranks
  over the paper's 24 settings, its 5-step settings and its 50-step settings; lower is better);
* ``paper_table2()``: variant, imagenet_clip, imagenet_fid, cc12m_clip, cc12m_fid (25 sampling steps).
"""

from __future__ import annotations

from importlib.resources import files

import pandas as pd

from trajbench import formulations


def _read(name: str) -> pd.DataFrame:
    with files(__package__).joinpath(name).open() as handle:
        table = pd.read_csv(handle)
    table["variant"] = [formulations.parse(v).name for v in table["variant"]]
    return table


def paper_table1() -> pd.DataFrame:
    return _read("sd3_table1.csv")


def paper_table2() -> pd.DataFrame:
    return _read("sd3_table2.csv")
