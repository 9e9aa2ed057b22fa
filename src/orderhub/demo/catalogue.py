"""The demo catalogue: warehouses, ~200 SKUs with per-channel platform ids, ~500 customers.

Everything is built deterministically (fixed tables, or a Random with a fixed seed inside a
cached builder), so every process — OrderHub, the simulator, the benchmark — sees the same data.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from functools import cache

WAREHOUSES: list[dict[str, str]] = [
    {"code": "WH-EAST", "name": "华东仓", "city": "上海"},
    {"code": "WH-SOUTH", "name": "华南仓", "city": "广州"},
]

REMOTE_PROVINCES = frozenset({"新疆维吾尔自治区", "西藏自治区", "青海省", "内蒙古自治区", "宁夏回族自治区", "甘肃省"})

# category -> (first, second, third) platform category ids (Douyin cid style).
CATEGORY_CIDS: dict[str, tuple[int, int, int]] = {
    "服装": (20000, 20001, 20002),
    "家居": (21000, 21001, 21002),
    "美妆": (22000, 22001, 22002),
    "食品": (23000, 23001, 23002),
    "数码配件": (24000, 24001, 24002),
    "母婴": (25000, 25001, 25002),
    "运动户外": (26000, 26001, 26002),
}


@dataclass(frozen=True, slots=True)
class Sku:
    code: str  # merchant SKU code, "SKU-1001"
    spu: str  # merchant product code, "SPU-101"
    product_name: str  # "纯棉T恤"
    specs: tuple[tuple[str, str], ...]  # (("颜色", "白色"), ("尺码", "L"))
    category: str
    price: int  # fen
    cost: int  # fen
    weight: int  # grams
    douyin_product_id: str  # 19 digits
    douyin_sku_id: str  # 19 digits
    youzan_item_id: str
    youzan_sku_id: str
    jd_ware_id: str
    jd_sku_id: str

    # Item/SKU ids of the channels added later, derived from the SKU's position in the catalogue.
    @property
    def _n(self) -> int:
        return int(self.code.removeprefix("SKU-")) - 1000

    @property
    def _p(self) -> int:
        return int(self.spu.removeprefix("SPU-")) - 100

    @property
    def taobao_num_iid(self) -> str:
        return str(600000000000 + self._p * 7919)

    @property
    def taobao_sku_id(self) -> str:
        return str(5000000000000 + self._n * 104_729)

    @property
    def pdd_goods_id(self) -> str:
        return str(300000000000 + self._p * 1009)

    @property
    def pdd_sku_id(self) -> str:
        return str(1200000000000 + self._n * 7_001)

    @property
    def wechat_product_id(self) -> str:
        return str(10000000000000 + self._p)

    @property
    def wechat_sku_id(self) -> str:
        return str(20000000000000 + self._n)

    @property
    def kuaishou_item_id(self) -> str:
        return str(21000000000000 + self._p * 131)

    @property
    def kuaishou_sku_id(self) -> str:
        return str(2100000000000000 + self._n * 977)

    @property
    def title(self) -> str:
        """Title with specs, as shops name their SKUs: "纯棉T恤 白色 L"."""
        return " ".join([self.product_name, *(value for _, value in self.specs)])


# (product name, category, base price fen, cost %, weight g, spec axes [(axis, [(value, price delta)])])
_PRODUCTS: list[tuple[str, str, int, int, int, list[tuple[str, list[tuple[str, int]]]]]] = [
    ("纯棉T恤", "服装", 5990, 40, 220, [("颜色", [("白色", 0), ("黑色", 0), ("灰色", 0), ("藏青", 0)]), ("尺码", [("M", 0), ("L", 0), ("XL", 0), ("XXL", 500)])]),
    ("连帽卫衣", "服装", 12900, 42, 520, [("颜色", [("黑色", 0), ("燕麦色", 0), ("雾蓝", 0)]), ("尺码", [("M", 0), ("L", 0), ("XL", 0), ("XXL", 1000)])]),
    ("直筒牛仔裤", "服装", 15900, 45, 650, [("颜色", [("浅蓝", 0), ("深蓝", 0)]), ("尺码", [("28", 0), ("30", 0), ("32", 0), ("34", 0), ("36", 0)])]),
    ("羊毛袜", "服装", 2990, 35, 80, [("颜色", [("灰色", 0), ("藏青", 0), ("驼色", 0), ("黑色", 0)])]),
    ("三合一冲锋衣", "服装", 39900, 48, 1100, [("颜色", [("黑色", 0), ("宝蓝", 0)]), ("尺码", [("L", 0), ("XL", 0), ("XXL", 0)])]),
    ("真丝围巾", "服装", 19900, 38, 120, [("颜色", [("酒红", 0), ("雾霾蓝", 0), ("米白", 0)])]),
    ("帆布收纳袋", "家居", 2990, 30, 300, [("颜色", [("米色", 0), ("灰色", 0)]), ("规格", [("中号", 0), ("大号", 1000)])]),
    ("乳胶枕", "家居", 16900, 45, 1400, [("规格", [("标准款", 0), ("加高款", 2000)])]),
    ("全棉四件套", "家居", 29900, 46, 2300, [("规格", [("1.5m床", 0), ("1.8m床", 5000)]), ("颜色", [("浅灰", 0), ("樱花粉", 0), ("雾蓝", 0)])]),
    ("不锈钢保温杯 500ml", "家居", 8900, 40, 380, [("颜色", [("白色", 0), ("黑色", 0), ("樱花粉", 0), ("薄荷绿", 0)])]),
    ("香薰蜡烛", "家居", 6900, 30, 350, [("香型", [("白茶", 0), ("雪松", 0), ("无花果", 0)])]),
    ("麦饭石不粘锅", "家居", 18900, 50, 1600, [("规格", [("28cm", 0), ("32cm", 3000)])]),
    ("玻璃密封罐", "家居", 3990, 35, 600, [("规格", [("3只装", 0), ("6只装", 3000)])]),
    ("保湿面霜 50g", "美妆", 15900, 30, 150, [("规格", [("单支", 0), ("两支装", 13900)])]),
    ("氨基酸洗面奶", "美妆", 6900, 28, 180, [("规格", [("100g", 0), ("150g", 2000)])]),
    ("丝绒口红", "美妆", 22000, 25, 60, [("色号", [("#999", 0), ("#520", 0), ("#316", 0), ("#888", 0)])]),
    ("清爽防晒霜 SPF50", "美妆", 11900, 30, 90, [("规格", [("50ml", 0), ("100ml", 6000)])]),
    ("补水面膜", "美妆", 9900, 25, 400, [("规格", [("10片装", 0), ("20片装", 8000)])]),
    ("温和卸妆油 200ml", "美妆", 12900, 28, 260, [("规格", [("单瓶", 0)])]),
    ("每日坚果礼盒", "食品", 9900, 55, 900, [("规格", [("750g", 0), ("1.5kg", 8000)])]),
    ("挂耳咖啡", "食品", 4990, 45, 200, [("规格", [("10包", 0), ("30包", 8000)]), ("烘焙度", [("中烘", 0), ("深烘", 0)])]),
    ("五常大米 5kg", "食品", 7990, 60, 5100, [("规格", [("单袋", 0)])]),
    ("风干牛肉干", "食品", 3990, 50, 260, [("口味", [("原味", 0), ("麻辣", 0), ("五香", 0)])]),
    ("新疆和田红枣", "食品", 3590, 50, 550, [("规格", [("500g", 0), ("1kg", 3000)])]),
    ("明前龙井茶", "食品", 25800, 45, 300, [("规格", [("100g", 0), ("250g", 32000)])]),
    ("土蜂蜜 500g", "食品", 6800, 50, 700, [("规格", [("单瓶", 0), ("两瓶装", 6000)])]),
    ("快充数据线", "数码配件", 2990, 30, 60, [("接口", [("Type-C", 0), ("Lightning", 1000)]), ("长度", [("1m", 0), ("2m", 500)])]),
    ("氮化镓充电器", "数码配件", 12900, 45, 120, [("规格", [("65W", 0), ("100W", 5000)]), ("颜色", [("白色", 0), ("黑色", 0)])]),
    ("静音无线鼠标", "数码配件", 7900, 40, 110, [("颜色", [("黑色", 0), ("白色", 0), ("粉色", 0)])]),
    ("降噪蓝牙耳机", "数码配件", 19900, 50, 150, [("颜色", [("曜石黑", 0), ("云母白", 0)])]),
    ("磨砂手机壳", "数码配件", 3900, 20, 50, [("型号", [("iPhone 15", 0), ("iPhone 15 Pro", 0), ("iPhone 16", 0), ("Mate 60", 0), ("小米14", 0)])]),
    ("轻薄充电宝", "数码配件", 9900, 45, 230, [("规格", [("10000mAh", 0), ("20000mAh", 4000)])]),
    ("机械键盘", "数码配件", 29900, 50, 900, [("轴体", [("红轴", 0), ("青轴", 0), ("茶轴", 0)])]),
    ("婴儿手口湿巾", "母婴", 3990, 45, 1200, [("规格", [("80抽×3包", 0), ("80抽×6包", 3500)])]),
    ("超薄纸尿裤", "母婴", 12900, 50, 1500, [("尺码", [("S", 0), ("M", 0), ("L", 0), ("XL", 0)])]),
    ("宝宝辅食碗", "母婴", 5900, 35, 400, [("颜色", [("奶白", 0), ("雾粉", 0)])]),
    ("加厚瑜伽垫", "运动户外", 8900, 40, 1300, [("颜色", [("紫色", 0), ("蓝色", 0), ("灰色", 0)]), ("厚度", [("6mm", 0), ("10mm", 2000)])]),
    ("计数跳绳", "运动户外", 2590, 35, 250, [("规格", [("标准款", 0), ("无绳款", 1400)])]),
    ("运动水壶", "运动户外", 4990, 35, 300, [("规格", [("750ml", 0), ("1L", 1000)]), ("颜色", [("黑色", 0), ("透明", 0)])]),
    ("速干运动短裤", "运动户外", 7900, 40, 180, [("颜色", [("黑色", 0), ("灰色", 0)]), ("尺码", [("M", 0), ("L", 0), ("XL", 0)])]),
    ("户外折叠椅", "运动户外", 13900, 50, 2600, [("颜色", [("军绿", 0), ("卡其", 0)])]),
    ("莫代尔睡衣套装", "服装", 16900, 40, 450, [("颜色", [("藕粉", 0), ("浅灰", 0), ("藏青", 0)]), ("尺码", [("M", 0), ("L", 0), ("XL", 0)])]),
    ("休闲帆布鞋", "服装", 19900, 45, 800, [("颜色", [("白色", 0), ("黑色", 0)]), ("尺码", [("37", 0), ("38", 0), ("39", 0), ("40", 0), ("41", 0), ("42", 0)])]),
    ("纯棉毛巾", "家居", 3990, 35, 300, [("颜色", [("白色", 0), ("灰色", 0), ("浅蓝", 0)]), ("规格", [("2条装", 0), ("4条装", 3500)])]),
    ("护手霜礼盒", "美妆", 8900, 30, 250, [("香型", [("玫瑰", 0), ("白茶", 0), ("柑橘", 0)]), ("规格", [("3支装", 0), ("5支装", 4000)])]),
    ("手工牛轧糖", "食品", 3290, 45, 400, [("口味", [("原味", 0), ("抹茶", 0), ("蔓越莓", 0)]), ("规格", [("300g", 0), ("500g", 2000)])]),
    ("磁吸手机支架", "数码配件", 4990, 35, 150, [("颜色", [("黑色", 0), ("银色", 0)]), ("规格", [("车载款", 0), ("桌面款", 1000)])]),
    ("儿童保温水杯", "母婴", 8900, 40, 350, [("颜色", [("蓝色", 0), ("粉色", 0), ("黄色", 0)]), ("规格", [("400ml", 0), ("600ml", 1000)])]),
    ("弹力阻力带", "运动户外", 3990, 30, 200, [("规格", [("轻度", 0), ("中度", 0), ("重度", 0), ("五件套", 6000)])]),
]


@cache
def skus() -> tuple[Sku, ...]:
    """Every demo SKU, in catalogue order (SKU-1001 first)."""
    out: list[Sku] = []
    for p, (name, category, base, cost_pct, weight, axes) in enumerate(_PRODUCTS):
        combos = itertools.product(*(values for _, values in axes))
        for combo in combos:
            i = len(out)
            price = base + sum(delta for _, delta in combo)
            out.append(
                Sku(
                    code=f"SKU-{1001 + i}",
                    spu=f"SPU-{101 + p}",
                    product_name=name,
                    specs=tuple((axis, value) for (axis, _), (value, _) in zip(axes, combo)),
                    category=category,
                    price=price,
                    cost=price * cost_pct // 100,
                    weight=weight,
                    douyin_product_id=str(3600000000000000000 + (p + 1) * 1_000_003),
                    douyin_sku_id=str(3700000000000000000 + (i + 1) * 997_001),
                    youzan_item_id=str(800000000 + p + 1),
                    youzan_sku_id=str(810000000 + i + 1),
                    jd_ware_id=str(10000000000 + p + 1),
                    jd_sku_id=str(100000000000 + i + 1),
                )
            )
    return tuple(out)


@cache
def sku_by_code() -> dict[str, Sku]:
    return {sku.code: sku for sku in skus()}


@dataclass(frozen=True, slots=True)
class Region:
    province: str
    province_code: str  # GB/T 2260, as Douyin's post_addr ids
    city: str
    city_code: str
    district: str
    district_code: str
    jd_province_id: str  # JD's own province ids
    jd_short_province: str  # JD writes "浙江", not "浙江省"

    @property
    def remote(self) -> bool:
        return self.province in REMOTE_PROVINCES


_REGIONS = [
    Region("北京市", "11", "北京市", "110100", "朝阳区", "110105", "1", "北京"),
    Region("北京市", "11", "北京市", "110100", "海淀区", "110108", "1", "北京"),
    Region("上海市", "31", "上海市", "310100", "浦东新区", "310115", "2", "上海"),
    Region("上海市", "31", "上海市", "310100", "徐汇区", "310104", "2", "上海"),
    Region("天津市", "12", "天津市", "120100", "和平区", "120101", "3", "天津"),
    Region("重庆市", "50", "重庆市", "500100", "渝中区", "500103", "4", "重庆"),
    Region("广东省", "44", "广州市", "440100", "天河区", "440106", "19", "广东"),
    Region("广东省", "44", "深圳市", "440300", "南山区", "440305", "19", "广东"),
    Region("浙江省", "33", "杭州市", "330100", "西湖区", "330106", "15", "浙江"),
    Region("浙江省", "33", "宁波市", "330200", "鄞州区", "330212", "15", "浙江"),
    Region("江苏省", "32", "南京市", "320100", "鼓楼区", "320106", "12", "江苏"),
    Region("江苏省", "32", "苏州市", "320500", "姑苏区", "320508", "12", "江苏"),
    Region("四川省", "51", "成都市", "510100", "武侯区", "510107", "22", "四川"),
    Region("湖北省", "42", "武汉市", "420100", "洪山区", "420111", "17", "湖北"),
    Region("山东省", "37", "济南市", "370100", "历下区", "370102", "13", "山东"),
    Region("山东省", "37", "青岛市", "370200", "市南区", "370202", "13", "山东"),
    Region("河南省", "41", "郑州市", "410100", "金水区", "410105", "7", "河南"),
    Region("湖南省", "43", "长沙市", "430100", "岳麓区", "430104", "18", "湖南"),
    Region("福建省", "35", "厦门市", "350200", "思明区", "350203", "16", "福建"),
    Region("陕西省", "61", "西安市", "610100", "雁塔区", "610113", "27", "陕西"),
    Region("辽宁省", "21", "沈阳市", "210100", "和平区", "210102", "8", "辽宁"),
    Region("安徽省", "34", "合肥市", "340100", "蜀山区", "340104", "14", "安徽"),
    Region("云南省", "53", "昆明市", "530100", "五华区", "530102", "25", "云南"),
    Region("广西壮族自治区", "45", "南宁市", "450100", "青秀区", "450103", "20", "广西"),
    Region("黑龙江省", "23", "哈尔滨市", "230100", "南岗区", "230103", "10", "黑龙江"),
]
_REMOTE_REGIONS = [
    Region("新疆维吾尔自治区", "65", "乌鲁木齐市", "650100", "天山区", "650102", "31", "新疆"),
    Region("新疆维吾尔自治区", "65", "喀什地区", "653100", "喀什市", "653101", "31", "新疆"),
    Region("西藏自治区", "54", "拉萨市", "540100", "城关区", "540102", "26", "西藏"),
    Region("青海省", "63", "西宁市", "630100", "城东区", "630102", "29", "青海"),
    Region("内蒙古自治区", "15", "呼和浩特市", "150100", "新城区", "150102", "11", "内蒙古"),
    Region("宁夏回族自治区", "64", "银川市", "640100", "兴庆区", "640104", "30", "宁夏"),
    Region("甘肃省", "62", "兰州市", "620100", "城关区", "620102", "28", "甘肃"),
]

_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐许韩冯邓曹彭曾萧田董袁潘蒋蔡余杜叶程"
_GIVEN = ["伟", "芳", "娜", "秀英", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明",
          "超", "秀兰", "霞", "平", "刚", "桂英", "浩然", "子涵", "欣怡", "梓萱", "宇轩", "思远", "雨桐", "嘉怡", "一鸣"]
_STREETS = ["人民路街道", "解放路街道", "新华街道", "中山街道", "建设路街道", "长安街道", "和平街道", "文化路街道"]
_ROADS = ["幸福路", "建设大道", "人民南路", "解放西路", "学府路", "科技园路", "滨江路", "光明街", "团结路", "青年路"]
_PHONE_PREFIXES = ["138", "139", "136", "150", "186", "177", "158", "189"]


@dataclass(frozen=True, slots=True)
class Customer:
    index: int
    name: str
    phone: str
    region: Region
    street: str
    street_code: str
    road: str
    detail: str  # full detail, e.g. "幸福路88号3栋502室"
    douyin_open_id: str
    youzan_open_id: str
    jd_pin: str

    # Buyer ids of the channels added later, derived so the existing ids stay as they were.
    @property
    def taobao_open_uid(self) -> str:
        return f"AAH{self.douyin_open_id[2:]}{self.index:04d}TB"

    @property
    def wechat_openid(self) -> str:
        return f"oWX{self.youzan_open_id[2:]}{self.index:04d}"

    @property
    def wechat_unionid(self) -> str:
        return f"oUN{self.youzan_open_id[2:]}{self.index:04d}"

    @property
    def kuaishou_open_id(self) -> str:
        return f"f{self.jd_pin[3:]}{self.index:05d}ks"


def make_address(rng: random.Random, region: Region) -> tuple[str, str, str, str]:
    """A street (name, code), road and a detail address inside `region`."""
    s = rng.randrange(len(_STREETS))
    road = rng.choice(_ROADS)
    detail = f"{road}{rng.randint(1, 399)}号{rng.randint(1, 20)}栋{rng.randint(1, 30)}{rng.randint(1, 4):02d}室"
    return _STREETS[s], f"{region.district_code}{s + 1:03d}", road, detail


@cache
def customers() -> tuple[Customer, ...]:
    """~500 demo buyers; about 10% live in remote provinces (新疆, 西藏, 青海, 内蒙古, 宁夏, 甘肃)."""
    rng = random.Random(20250318)
    out = []
    for i in range(500):
        region = rng.choice(_REMOTE_REGIONS) if rng.random() < 0.10 else rng.choice(_REGIONS)
        street, street_code, road, detail = make_address(rng, region)
        out.append(
            Customer(
                index=i,
                name=rng.choice(_SURNAMES) + rng.choice(_GIVEN),
                phone=f"{_PHONE_PREFIXES[i % len(_PHONE_PREFIXES)]}0000{i:04d}",
                region=region,
                street=street,
                street_code=street_code,
                road=road,
                detail=detail,
                douyin_open_id=f"DY{rng.getrandbits(64):016x}",
                youzan_open_id=f"YZ{rng.getrandbits(64):016x}",
                jd_pin=f"jd_{rng.getrandbits(40):010x}",
            )
        )
    return tuple(out)


def regions(remote: bool) -> list[Region]:
    return list(_REMOTE_REGIONS if remote else _REGIONS)
