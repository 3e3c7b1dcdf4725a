"""Model configurations as plain dataclasses: `full` (BEVFusion-Base sizes) and `tiny` (same structure, CPU-sized).

`get_config(name, gca, heads)`: name is `full`, `tiny` or a path to a model-config YAML:

    base: tiny                 # full | tiny (default full)
    image_size: [128, 352]     # any ModelConfig field; nested dataclasses take nested mappings
    camera: {backbone: {embed_dims: 32}}
    object_head: {num_proposals: 100}

The top-level geometry (`point_cloud_range`, `voxel_size`, `image_size`, `map_bound`, the class lists) is the single
source of truth: `finalize` derives every part's copy of it (voxelizer, sparse shape, frustum, head grids), so
overriding it in one place keeps the model consistent. Both heads use the detection geometry (180x180 BEV over
+-54 m; the map head resamples it to `map_bound`), as in the phase-4a joint model.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args, get_origin

from model.heads import BEVSegHeadConfig, TransFusionHeadConfig

MODEL_VERSION = "bevfusion-db75150+task-gca.1"
OBJECT_CLASSES = ("car", "truck", "construction_vehicle", "bus", "trailer", "barrier", "motorcycle", "bicycle",
                  "pedestrian", "traffic_cone")
MAP_CLASSES = ("drivable_area", "ped_crossing", "walkway", "stop_line", "carpark_area", "divider")
HEADS = ("object", "map")
GcaMode = Literal["none", "shared", "task"]
GCA_MODES: tuple[str, ...] = get_args(GcaMode)
VTransformType = Literal["DepthLSSTransform", "LSSTransform"]
BoxConvention = Literal["mmdet3d", "mit-han-lab"]


@dataclass
class SwinConfig:
    embed_dims: int = 96
    depths: tuple = (2, 2, 6, 2)
    num_heads: tuple = (3, 6, 12, 24)
    window_size: int = 7
    mlp_ratio: float = 4
    qkv_bias: bool = True
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.2
    out_indices: tuple = (1, 2, 3)


@dataclass
class FPNConfig:
    in_channels: tuple = (192, 384, 768)
    out_channels: int = 256


@dataclass
class VTransformConfig:
    type: VTransformType = "DepthLSSTransform"  # LSSTransform: no LiDAR depth input
    in_channels: int = 256
    out_channels: int = 80
    feature_stride: int = 8  # feature_size = image_size / stride (GeneralizedLSSFPN level 0)
    xbound: tuple = (-54.0, 54.0, 0.3)
    ybound: tuple = (-54.0, 54.0, 0.3)
    zbound: tuple = (-10.0, 10.0, 20.0)
    dbound: tuple = (1.0, 60.0, 0.5)
    downsample: int = 2
    image_size: tuple = (256, 704)  # derived from ModelConfig.image_size


@dataclass
class CameraConfig:
    backbone: SwinConfig = field(default_factory=SwinConfig)
    neck: FPNConfig = field(default_factory=FPNConfig)
    vtransform: VTransformConfig = field(default_factory=VTransformConfig)


@dataclass
class VoxelizeConfig:
    max_num_points: int = 10
    max_voxels: tuple = (120000, 160000)  # (train, eval)


@dataclass
class SparseEncoderConfig:
    in_channels: int = 5
    base_channels: int = 16
    output_channels: int = 128
    encoder_channels: tuple = ((16, 16, 32), (32, 32, 64), (64, 64, 128), (128, 128))
    encoder_paddings: tuple = ((0, 0, 1), (0, 0, 1), (0, 0, (1, 1, 0)), (0, 0))


@dataclass
class LidarConfig:
    voxelize: VoxelizeConfig = field(default_factory=VoxelizeConfig)
    backbone: SparseEncoderConfig = field(default_factory=SparseEncoderConfig)


@dataclass
class FuserConfig:
    out_channels: int = 256


@dataclass
class SECONDConfig:
    out_channels: tuple = (128, 256)
    layer_nums: tuple = (5, 5)
    layer_strides: tuple = (1, 2)


@dataclass
class SECONDFPNConfig:
    out_channels: tuple = (256, 256)
    upsample_strides: tuple = (1, 2)


@dataclass
class DecoderConfig:
    backbone: SECONDConfig = field(default_factory=SECONDConfig)
    neck: SECONDFPNConfig = field(default_factory=SECONDFPNConfig)


@dataclass
class GCAConfig:
    mode: GcaMode = "task"
    reduction: int = 4


@dataclass
class ModelConfig:
    name: str = "full"
    point_cloud_range: tuple = (-54.0, -54.0, -5.0, 54.0, 54.0, 3.0)
    voxel_size: tuple = (0.075, 0.075, 0.2)
    image_size: tuple = (256, 704)  # (H, W) after image augmentation
    num_cameras: int = 6
    map_bound: tuple = ((-50.0, 50.0, 0.5), (-50.0, 50.0, 0.5))  # (min, max, res) for x and y
    object_classes: tuple = OBJECT_CLASSES
    map_classes: tuple = MAP_CLASSES
    heads: tuple = HEADS
    # How the object head encodes boxes: "mmdet3d" (1.x: l, w, h, yaw, centre z) or "mit-han-lab" (the original:
    # w, l, h, -yaw - pi/2, regressed z = centre + h/2); model/heads/box_coder.py. A loaded head brings its own.
    box_convention: BoxConvention = "mmdet3d"
    camera: CameraConfig = field(default_factory=CameraConfig)
    lidar: LidarConfig = field(default_factory=LidarConfig)
    fuser: FuserConfig = field(default_factory=FuserConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    gca: GCAConfig = field(default_factory=GCAConfig)
    object_head: TransFusionHeadConfig = field(default_factory=TransFusionHeadConfig)
    map_head: BEVSegHeadConfig = field(default_factory=BEVSegHeadConfig)

    # ---- derived geometry
    @property
    def grid_size(self) -> tuple[int, int, int]:
        """LiDAR voxel grid (X, Y, Z)."""
        pc, vs = self.point_cloud_range, self.voxel_size
        return tuple(round((pc[i + 3] - pc[i]) / vs[i]) for i in range(3))  # type: ignore[return-value]

    @property
    def sparse_shape(self) -> tuple[int, int, int]:
        X, Y, Z = self.grid_size
        return (X, Y, Z + 1)

    @property
    def feature_size(self) -> tuple[int, int]:
        s = self.camera.vtransform.feature_stride
        return (self.image_size[0] // s, self.image_size[1] // s)

    @property
    def lidar_bev_channels(self) -> int:
        return self.lidar.backbone.output_channels * _lidar_out_z(self)

    @property
    def bev_size(self) -> tuple[int, int]:
        X, Y, _ = self.grid_size
        return (X // 8, Y // 8)

    @property
    def decoder_channels(self) -> int:
        return sum(self.decoder.neck.out_channels)

    @property
    def map_size(self) -> tuple[int, int]:
        return tuple(round((hi - lo) / r) for lo, hi, r in self.map_bound)  # type: ignore[return-value]


def _lidar_out_z(cfg: ModelConfig) -> int:
    z = cfg.sparse_shape[2]
    pads = cfg.lidar.backbone.encoder_paddings
    for i in range(len(cfg.lidar.backbone.encoder_channels) - 1):
        p = pads[i][-1]
        pz = p[2] if isinstance(p, (list, tuple)) else p
        z = (z + 2 * pz - 3) // 2 + 1
    return (z - 3) // 2 + 1  # conv_out: kernel 3, stride 2 in z


def finalize(cfg: ModelConfig) -> ModelConfig:
    """Copy the top-level geometry into the parts and check that the camera and LiDAR BEV maps line up."""
    vt = cfg.camera.vtransform
    vt.image_size = tuple(cfg.image_size)
    vt.in_channels = cfg.camera.neck.out_channels
    X, Y, _ = cfg.grid_size
    cam_bev = tuple(round((b[1] - b[0]) / b[2]) // vt.downsample for b in (vt.xbound, vt.ybound))
    if cam_bev != cfg.bev_size:
        raise ValueError(f"camera BEV {cam_bev} (x/ybound, downsample) != LiDAR BEV {cfg.bev_size} "
                         "(point_cloud_range / voxel_size / 8)")
    oh = cfg.object_head
    oh.in_channels = cfg.decoder_channels
    oh.num_classes = len(cfg.object_classes)
    oh.point_cloud_range = tuple(cfg.point_cloud_range)
    oh.voxel_size = tuple(cfg.voxel_size)
    oh.out_size_factor = 8
    mh = cfg.map_head
    mh.in_channels = cfg.decoder_channels
    mh.classes = tuple(cfg.map_classes)
    pc = cfg.point_cloud_range
    bx, by = cfg.bev_size
    mh.input_scope = ((pc[0], pc[3], (pc[3] - pc[0]) / bx), (pc[1], pc[4], (pc[4] - pc[1]) / by))
    mh.output_scope = tuple(tuple(b) for b in cfg.map_bound)
    cfg.heads = tuple(h for h in HEADS if h in cfg.heads)
    validate(cfg)
    return cfg


def validate(obj, where: str = "") -> None:
    """The one check of every `Literal`-typed field (GCA mode, view transform, box convention), nested included."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        hint = hints.get(f.name)
        if get_origin(hint) is Literal and value not in get_args(hint):
            choices = ", ".join(map(str, get_args(hint)))
            raise ValueError(f"model config {where}{f.name} must be one of {choices}, got {value!r}")
        if dataclasses.is_dataclass(value):
            validate(value, f"{where}{f.name}.")


def full_config() -> ModelConfig:
    return ModelConfig(name="full")


def tiny_config() -> ModelConfig:
    """Same modules and wiring as `full`, sized so a CPU trains a batch of 2 in about a second: 64x176 images,
    a 90x90 BEV (0.15 m voxels, 1.2 m BEV cells; even, for SECOND's stride-2 stage), narrow channels, few depth
    bins and proposals. Heatmap Gaussians keep the original's smallest radius in metres (2 cells of 0.6 m = 1 cell
    of 1.2 m): at 2 cells of 1.2 m, barriers 2.8 m apart and pedestrians in groups blur into one peak. No dropout
    or drop path: a few hundred steps need no regularisation, and on a CPU the decoder's attention dropout (over
    100 x 8100 weights) costs about 7 % of a step. The decoder neck gives 2 x 32 channels: the map head's 3x3 convs
    and the detection head's shared conv run at that width, and at 2 x 64 they cost a CPU step more time than they
    gave the demo in accuracy."""
    cfg = ModelConfig(name="tiny", voxel_size=(0.15, 0.15, 0.2), image_size=(64, 176),
                      map_bound=((-50.0, 50.0, 2.0), (-50.0, 50.0, 2.0)))
    cfg.camera = CameraConfig(
        backbone=SwinConfig(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=4,
                            drop_path_rate=0.0),
        neck=FPNConfig(in_channels=(32, 64, 128), out_channels=32),
        vtransform=VTransformConfig(out_channels=16, xbound=(-54.0, 54.0, 0.6), ybound=(-54.0, 54.0, 0.6),
                                    dbound=(1.0, 60.0, 2.5)),
    )
    cfg.lidar = LidarConfig(
        voxelize=VoxelizeConfig(max_voxels=(30000, 40000)),
        backbone=SparseEncoderConfig(base_channels=8, output_channels=32,
                                     encoder_channels=((8, 8, 16), (16, 16, 32), (32, 32, 32), (32, 32))),
    )
    cfg.fuser = FuserConfig(out_channels=64)
    cfg.decoder = DecoderConfig(SECONDConfig(out_channels=(32, 64), layer_nums=(2, 2)),
                                SECONDFPNConfig(out_channels=(32, 32)))
    cfg.object_head = TransFusionHeadConfig(hidden_channel=32, num_proposals=100, num_heads=4, ffn_channel=64,
                                            head_conv=32, min_radius=1, dropout=0.0)
    return cfg


BUILTIN = {"full": full_config, "tiny": tiny_config}


def _override(obj, data: dict, where: str):
    for key, value in data.items():
        if not hasattr(obj, key) or (dataclasses.is_dataclass(obj) and key not in {f.name for f in
                                                                                 dataclasses.fields(obj)}):
            raise ValueError(f"unknown model config field {where}{key}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            _override(current, value, f"{where}{key}.")
        else:
            setattr(obj, key, _freeze(value))


def _freeze(v):
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, dict):
        return {k: _freeze(x) for k, x in v.items()}
    return v


def get_config(name: str = "full", gca: str = "task", heads=HEADS) -> ModelConfig:
    """`full`, `tiny` or a model-config YAML path (see the module docstring); `gca` and `heads` always apply."""
    if name in BUILTIN:
        cfg = BUILTIN[name]()
    else:
        path = Path(name)
        if not path.is_file():
            raise ValueError(f"model config must be one of {sorted(BUILTIN)} or a YAML file, got {name!r}")
        from bevctl.yamlsafe import load_file  # size, UTF-8, alias-expansion and duplicate-key limits (issue 15)

        data = load_file(path, what="model config")[0] or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a model config YAML is a mapping")
        base = data.pop("base", "full")
        if base not in BUILTIN:
            raise ValueError(f"{path}: base must be one of {sorted(BUILTIN)}")
        cfg = BUILTIN[base]()
        cfg.name = str(data.pop("name", path.stem))
        _override(cfg, data, "")
    cfg.gca.mode = gca
    unknown = set(heads) - set(HEADS)
    if unknown or not heads:
        raise ValueError(f"heads must be a non-empty subset of {HEADS}, got {tuple(heads)}")
    cfg.heads = tuple(heads)
    return finalize(cfg)


def to_dict(cfg: ModelConfig) -> dict:
    return dataclasses.asdict(cfg)
