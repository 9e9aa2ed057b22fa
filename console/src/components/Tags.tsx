import { Tag, Tooltip } from 'antd';
import { useI18n } from '../i18n';
import { STATUS_COLORS } from '../codes';

export function StatusTag({ status }: { status: string }) {
  const { label } = useI18n();
  return <Tag color={STATUS_COLORS[status] ?? 'default'} data-testid="status-tag">{label('status', status)}</Tag>;
}

export function HoldTags({ holds }: { holds: { code: string; reason?: string }[] }) {
  const { label } = useI18n();
  return <>{holds.map((h) => <Tooltip key={h.code} title={h.reason}><Tag color="orange">{label('hold', h.code)}</Tag></Tooltip>)}</>;
}
