// The codes the API speaks (DESIGN.md §3); their labels live in the dictionaries under these prefixes.
export const CHANNELS = ['douyin', 'taobao', 'jd', 'pdd', 'youzan', 'wechat_channels', 'kuaishou', 'pos'];
export const STATUSES = ['pending_payment', 'paid', 'on_hold', 'ready', 'picking', 'shipped', 'delivered', 'completed', 'cancelled', 'closed'];
export const HOLD_CODES = ['risk_review', 'out_of_stock', 'address_incomplete', 'remote_area', 'buyer_message', 'seller_remark',
  'price_anomaly', 'duplicate_suspect', 'intercept_pending', 'sku_unmapped', 'manual'];
export const ROLES = ['admin', 'ops', 'cs', 'warehouse', 'finance', 'viewer'];

export const STATUS_COLORS: Record<string, string> = {
  pending_payment: 'default', paid: 'cyan', on_hold: 'red', ready: 'blue', picking: 'geekblue', shipped: 'purple',
  delivered: 'green', completed: 'green', cancelled: 'default', closed: 'default',
};
