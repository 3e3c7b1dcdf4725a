"""Writes the synthetic scenes' road layout in the nuScenes map-expansion format (v1.3) that `NuScenesMap` reads."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from model.data.synth_world import MAP_DIMS, SceneWorld


def token(*parts) -> str:
    return hashlib.md5("|".join(str(p) for p in parts).encode()).hexdigest()


class MapBuilder:
    """Accumulates nodes, lines, polygons and the semantic layers of one map (one location)."""

    POLYGON_LAYERS = ("drivable_area", "road_segment", "road_block", "lane", "ped_crossing", "walkway", "stop_line",
                      "carpark_area")
    LINE_LAYERS = ("road_divider", "lane_divider", "traffic_light")

    def __init__(self, location: str, seed: int):
        self.location = location
        self.seed = seed
        self.data: dict = {"version": "1.3", "canvas_edge": list(MAP_DIMS[location]), "node": [], "line": [],
                           "polygon": [], "lane_connector": [], "arcline_path_3": {}, "connectivity": {}}
        for layer in self.POLYGON_LAYERS + self.LINE_LAYERS:
            self.data[layer] = []
        self._n = 0

    def _tok(self, kind: str) -> str:
        self._n += 1
        return token("map", self.seed, self.location, kind, self._n)

    def _nodes(self, pts: np.ndarray) -> list[str]:
        out = []
        for x, y in np.asarray(pts, float):
            t = self._tok("node")
            self.data["node"].append({"token": t, "x": round(float(x), 3), "y": round(float(y), 3)})
            out.append(t)
        return out

    def polygon(self, ring: np.ndarray) -> str:
        t = self._tok("polygon")
        self.data["polygon"].append({"token": t, "exterior_node_tokens": self._nodes(ring), "holes": []})
        return t

    def line(self, pts: np.ndarray) -> str:
        t = self._tok("line")
        self.data["line"].append({"token": t, "node_tokens": self._nodes(pts)})
        return t

    def add_scene(self, w: SceneWorld) -> None:
        d = self.data
        area = self._tok("drivable_area")
        d["drivable_area"].append({"token": area, "polygon_tokens": [self.polygon(p) for p in w.polygons["drivable_area"]]})
        segments = []
        for i, poly in enumerate(w.polygons["road_segment"]):
            t = self._tok("road_segment")
            d["road_segment"].append({"token": t, "polygon_token": self.polygon(poly), "is_intersection": i == 1,
                                      "drivable_area_token": area})
            segments.append(t)
        blocks = []
        for i, poly in enumerate(w.polygons["road_block"]):
            t = self._tok("road_block")
            d["road_block"].append({"token": t, "polygon_token": self.polygon(poly), "from_edge_line_token": self.line(poly[[0, 3]]),
                                    "to_edge_line_token": self.line(poly[[1, 2]]),
                                    "road_segment_token": segments[0 if i < 2 else 2]})
            blocks.append(t)
        for i, poly in enumerate(w.polygons["lane"]):
            t = self._tok("lane")
            backwards = (i % 4) >= 2  # the two left lanes carry the oncoming traffic
            start, end = (poly[1:3].mean(0), poly[[0, 3]].mean(0)) if backwards else (poly[[0, 3]].mean(0), poly[1:3].mean(0))
            yaw = float(np.arctan2(*(end - start)[::-1]))
            length = float(np.linalg.norm(end - start))
            d["lane"].append({"token": t, "polygon_token": self.polygon(poly), "lane_type": "CAR",
                              "from_edge_line_token": self.line(poly[[0, 3]]), "to_edge_line_token": self.line(poly[[1, 2]]),
                              "left_lane_divider_segments": [], "right_lane_divider_segments": []})
            # A straight lane centre line: the arc segments of an LSR path with zero-length turns.
            d["arcline_path_3"][t] = [{"start_pose": [float(start[0]), float(start[1]), yaw],
                                       "end_pose": [float(end[0]), float(end[1]), yaw], "shape": "LSR",
                                       "radius": 999.999, "segment_length": [0.0, length, 0.0]}]
            d["connectivity"][t] = {"incoming": [], "outgoing": []}
        crossings = []
        for poly in w.polygons["ped_crossing"]:
            t = self._tok("ped_crossing")
            d["ped_crossing"].append({"token": t, "polygon_token": self.polygon(poly), "road_segment_token": segments[1]})
            crossings.append(t)
        for poly in w.polygons["walkway"]:
            d["walkway"].append({"token": self._tok("walkway"), "polygon_token": self.polygon(poly)})
        for i, poly in enumerate(w.polygons["stop_line"]):
            d["stop_line"].append({"token": self._tok("stop_line"), "polygon_token": self.polygon(poly),
                                   "stop_line_type": "PED_CROSSING", "ped_crossing_tokens": [crossings[i]],
                                   "traffic_light_tokens": [], "road_block_token": blocks[0]})
        for poly in w.polygons["carpark_area"]:
            d["carpark_area"].append({"token": self._tok("carpark_area"), "polygon_token": self.polygon(poly),
                                      "orientation": float(w.heading + np.pi / 2), "road_block_token": ""})
        for line in w.lines["road_divider"]:
            d["road_divider"].append({"token": self._tok("road_divider"), "line_token": self.line(line),
                                      "road_segment_token": segments[0]})
        for line in w.lines["lane_divider"]:
            lt = self.line(line)
            nodes = d["line"][-1]["node_tokens"]
            d["lane_divider"].append({"token": self._tok("lane_divider"), "line_token": lt,
                                      "lane_divider_segments": [{"node_token": n, "segment_type": "DOUBLE_DASHED_WHITE"}
                                                                for n in nodes]})

    def write(self, root: Path) -> Path:
        path = root / "maps" / "expansion" / f"{self.location}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.data, separators=(",", ":")), encoding="utf-8")
        return path
